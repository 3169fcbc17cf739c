//! Users' passwords: argon2id hashes, computed on blocking threads a few at
//! a time.
//!
//! argon2id is slow and memory-hard on purpose (19 MiB and tens of
//! milliseconds a hash with the default parameters), so it never runs on
//! the async threads, and a bound on hashes in progress keeps a burst of
//! logins from taking every blocking thread and all the memory. Hashes
//! waiting for a place are bounded too: past that, a request is answered
//! at once with a retriable refusal, so anonymous clients pipelining logins
//! can make the SC neither queue without end nor starve `user add` and
//! `user passwd` forever.

use std::sync::LazyLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use runnel_api::{ApiError, ErrorCode};
use tokio::sync::Semaphore;

use crate::store::HashedPassword;

/// Shortest password accepted, in bytes.
pub const PASSWORD_LEN_MIN: usize = 8;
/// Longest password accepted, in bytes: hashing time grows with the input.
pub const PASSWORD_LEN_MAX: usize = 1024;
/// Hashes computed at once.
const HASHES_AT_ONCE: usize = 4;
/// Hashes waiting for one of the [`HASHES_AT_ONCE`] places.
const HASHES_WAITING_MAX: usize = 64;

/// Checked in place of a user's hash when the user does not exist, so an
/// unknown user name costs the same time as a wrong password and the
/// timing does not tell which users exist. Made with the parameters every
/// stored hash is made with.
static ABSENT_USER_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_now("no user has this password").expect("the default argon2id parameters hash")
});

/// Hashes and checks passwords.
#[derive(Debug)]
pub struct Passwords {
    /// A place for each hash running or waiting to run.
    admitted: Semaphore,
    running: Semaphore,
}

impl Passwords {
    pub fn new() -> Passwords {
        Passwords::with_limits(HASHES_AT_ONCE, HASHES_WAITING_MAX)
    }

    /// At most `at_once` hashes running and `waiting` more waiting.
    pub fn with_limits(at_once: usize, waiting: usize) -> Passwords {
        make_absent_user_hash();
        Passwords {
            admitted: Semaphore::new(at_once + waiting),
            running: Semaphore::new(at_once),
        }
    }

    /// A new hash of `password`, with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<HashedPassword, ApiError> {
        let hashed = self.blocking(move || hash_now(&password)).await?;
        hashed.map(HashedPassword).map_err(|error| {
            ApiError::new(
                ErrorCode::UNKNOWN,
                format!("the SC could not hash the password: {error}"),
            )
        })
    }

    /// Whether `password` is the one `stored` was made from; with no
    /// stored hash, false, after the same work as a real check.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<HashedPassword>,
    ) -> Result<bool, ApiError> {
        let known = stored.is_some();
        let matches = self
            .blocking(move || {
                let hash = stored.map_or_else(|| ABSENT_USER_HASH.clone(), |stored| stored.0);
                PasswordHash::new(&hash).is_ok_and(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            })
            .await?;
        Ok(known && matches)
    }

    /// Runs `work` on a blocking thread once a place is free; refuses it
    /// at once when too many hashes wait already.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _admitted = self.admitted.try_acquire().map_err(|_| busy())?;
        let _running = self
            .running
            .acquire()
            .await
            .expect("the semaphore is never closed");
        match tokio::task::spawn_blocking(work).await {
            Ok(value) => Ok(value),
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }
}

/// Makes [`ABSENT_USER_HASH`] ahead of any login: made by the first
/// unknown user's, it would cost that login two hashes, which tells.
/// Made on a blocking thread when called on the runtime, which keeps its
/// async threads free; a login arriving first waits for it there.
fn make_absent_user_hash() {
    let make = || {
        LazyLock::force(&ABSENT_USER_HASH);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(make)),
        Err(_) => make(),
    }
}

fn busy() -> ApiError {
    ApiError::new(
        ErrorCode::TOO_MANY_REQUESTS,
        "the SC is busy checking passwords; retry shortly",
    )
}

/// Refuses a new password shorter than [`PASSWORD_LEN_MIN`] or longer
/// than [`PASSWORD_LEN_MAX`] bytes.
pub fn check_new_password(password: &str) -> Result<(), ApiError> {
    if (PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&password.len()) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::INVALID_CONFIG,
        format!(
            "a password must be {PASSWORD_LEN_MIN} to {PASSWORD_LEN_MAX} bytes long, not {}; \
             choose another",
            password.len()
        ),
    ))
}

fn hash_now(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default().hash_password(password.as_bytes(), &salt)?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let passwords = Passwords::new();
        let hash = passwords
            .hash("correct horse".to_string())
            .await
            .expect("hash");
        assert!(hash.0.starts_with("$argon2id$"), "{hash:?}");
        let verify = async |password: &str, stored: &HashedPassword| {
            passwords
                .verify(password.to_string(), Some(stored.clone()))
                .await
                .expect("verified")
        };
        assert!(verify("correct horse", &hash).await);
        assert!(!verify("wrong horse", &hash).await);
        let again = passwords
            .hash("correct horse".to_string())
            .await
            .expect("hash");
        assert!(
            verify("correct horse", &again).await,
            "a second hash of the same password verifies too"
        );
    }

    #[tokio::test]
    async fn an_absent_user_never_verifies() {
        let passwords = Passwords::new();
        let verified = passwords
            .verify("no user has this password".to_string(), None)
            .await;
        assert!(!verified.expect("verified"));
    }

    /// A place in the queue per waiting hash, up to the bound; past it, a
    /// retriable refusal at once, not one more waiter.
    #[tokio::test]
    async fn hashes_past_the_waiting_bound_are_refused_at_once() {
        let passwords = Arc::new(Passwords::with_limits(1, 1));
        let held = passwords.running.acquire().await.expect("the only place");
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let passwords = Arc::clone(&passwords);
                tokio::spawn(async move { passwords.verify("password".to_string(), None).await })
            })
            .collect();
        for _ in 0..1_000 {
            if passwords.admitted.available_permits() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(passwords.admitted.available_permits(), 0, "both admitted");

        let refused = tokio::time::timeout(
            Duration::from_secs(10),
            passwords.hash("one too many".to_string()),
        )
        .await
        .expect("refused at once, not queued")
        .expect_err("refused");
        assert_eq!(refused.code, ErrorCode::TOO_MANY_REQUESTS, "{refused:?}");
        assert!(refused.code.is_retriable());
        assert_eq!(
            refused.message,
            "the SC is busy checking passwords; retry shortly"
        );

        drop(held);
        for task in waiting {
            let verified = task
                .await
                .expect("the task")
                .expect("served once a place was free");
            assert!(!verified);
        }
        passwords
            .hash("room again".to_string())
            .await
            .expect("the queue has room again");
    }

    /// The stand-in hash costs what a stored one costs: same algorithm and
    /// parameters.
    #[test]
    fn the_absent_user_hash_has_the_stored_parameters() {
        let absent = PasswordHash::new(&ABSENT_USER_HASH).expect("parses");
        let stored = hash_now("some password").expect("hash");
        let stored = PasswordHash::new(&stored).expect("parses");
        assert_eq!(absent.algorithm, stored.algorithm);
        assert_eq!(absent.version, stored.version);
        assert_eq!(absent.params, stored.params);
    }

    #[test]
    fn new_passwords_are_bounded() {
        for (length, accepted) in [(7, false), (8, true), (1024, true), (1025, false)] {
            let result = check_new_password(&"p".repeat(length));
            assert_eq!(result.is_ok(), accepted, "{length}: {result:?}");
        }
    }
}
