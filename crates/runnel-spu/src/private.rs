//! The peer listener. Replication will be served here; until then it
//! answers `ApiVersions` only, so peers and tools can check it is up.

use runnel_api::{ApiError, ApiKey, ApiVersionsRequest, ErrorCode, Listener};
use runnel_transport::{Handler, IncomingRequest, Responder};

use crate::{api_versions, served_api};

const SERVED: &[Listener] = &[Listener::Any];

#[derive(Debug)]
pub(crate) struct PrivateApi;

impl Handler for PrivateApi {
    async fn handle(&self, request: IncomingRequest, responder: Responder) {
        let reply = served_api(&request.header, SERVED, "private").and_then(|api| match api {
            ApiKey::ApiVersions => request
                .decode::<ApiVersionsRequest>()
                .map(|_| api_versions(SERVED))
                .map_err(|error| {
                    ApiError::new(
                        ErrorCode::MALFORMED_REQUEST,
                        format!("cannot decode the ApiVersions request: {error}"),
                    )
                }),
            other => Err(ApiError::new(
                ErrorCode::UNSUPPORTED_API,
                format!("{other:?} is not served on the SPU's private listener"),
            )),
        });
        responder.reply(&reply).await
    }
}
