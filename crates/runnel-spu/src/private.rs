//! The peer listener. Replication will be served here; until then it
//! answers `ApiVersions` only, so peers and tools can check it is up.

use runnel_api::{ApiError, ApiKey, ApiVersionsRequest, ErrorCode, Listener};
use runnel_transport::{Handler, IncomingRequest, Responder};

const SERVED: &[Listener] = &[Listener::Any];
const NAME: &str = "the SPU's private listener";

#[derive(Debug)]
pub(crate) struct PrivateApi;

impl Handler for PrivateApi {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let header = &request.header;
        let served = runnel_api::check_served(header.api_key, header.api_version, SERVED, NAME);
        let reply = served.and_then(|api| match api {
            ApiKey::ApiVersions => request
                .decode::<ApiVersionsRequest>()
                .map(|_| runnel_api::api_versions(SERVED))
                .map_err(|error| {
                    ApiError::new(
                        ErrorCode::MALFORMED_REQUEST,
                        format!("cannot decode the ApiVersions request: {error}"),
                    )
                }),
            other => Err(ApiError::new(
                ErrorCode::UNSUPPORTED_API,
                format!("{other:?} is not served on {NAME}"),
            )),
        });
        responder.reply(&reply).await
    }
}
