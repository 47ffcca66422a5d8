//! `ApiError`: the one place where failures become Matrix error responses.
//!
//! Handlers return `Result<_, ApiError>`; nothing else in the crate picks an
//! `errcode` or an HTTP status. Internal causes (storage, a panicked blocking
//! task) become an opaque 500 `M_UNKNOWN`, and the cause chain is logged
//! here, once.

use std::error::Error as StdError;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::companion::upstream::UpstreamError;
use crate::federation::auth::AuthError;
use crate::homeserver::accounts::AccountError;
use crate::homeserver::identity::IdentityError;
use crate::homeserver::Error as HomeserverError;
use crate::store::StoreError;
use crate::sync::SyncError;

/// `Retry-After` of a 503 (seconds).
const RETRY_AFTER_SECS: &str = "1";

/// A failed request, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `M_NOT_JSON`: the body is not JSON at all.
    #[error("{0}")]
    NotJson(String),
    /// 400 `M_BAD_JSON`: JSON, but not the expected shape.
    #[error("{0}")]
    BadJson(String),
    /// 400 `M_INVALID_PARAM`: a path or query parameter is malformed.
    #[error("{0}")]
    InvalidParam(String),
    /// 400 `M_INVALID_USERNAME`.
    #[error("{0}")]
    InvalidUsername(String),
    /// 400 `M_USER_IN_USE`.
    #[error("User ID already taken.")]
    UserInUse,
    /// 400 `M_UNKNOWN`: a request Synapse also refuses without a specific code.
    #[error("{0}")]
    BadRequest(String),
    /// 401 `M_MISSING_TOKEN`.
    #[error("Missing access token.")]
    MissingToken,
    /// 401 `M_UNKNOWN_TOKEN`.
    #[error("Unrecognised access token.")]
    UnknownToken,
    /// 401 `M_MISSING_TOKEN`: an access token in both the `Authorization`
    /// header and the `access_token` query parameter.
    #[error(
        "An access token was given both in the Authorization header and in the access_token \
         query parameter; send it only once (in the header)"
    )]
    TokenGivenTwice,
    /// 401 `M_UNAUTHORIZED`: a federation request whose X-Matrix
    /// authorization is missing, malformed, for another server, or does
    /// not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `M_FORBIDDEN`.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `M_USER_DEACTIVATED`.
    #[error("This account has been deactivated")]
    UserDeactivated,
    /// 401 for user-interactive auth: the flows and the session, plus
    /// `M_FORBIDDEN` when a stage was tried and failed (no `errcode` when
    /// the client has just not authenticated yet).
    #[error("{}", failure.as_deref().unwrap_or("Authentication required"))]
    AuthRequired {
        /// The UIA session to continue.
        session: String,
        /// Why the attempted stage failed, if one was attempted.
        failure: Option<String>,
    },
    /// 404 `M_NOT_FOUND`.
    #[error("{0}")]
    NotFound(String),
    /// 404 or 405 `M_UNRECOGNIZED`: no such endpoint, or not with this method.
    #[error("Unrecognized request")]
    Unrecognized {
        /// 404 for an unknown path, 405 for a known path and wrong method.
        method_not_allowed: bool,
    },
    /// 413 `M_TOO_LARGE`: the body is over the size limit.
    #[error("Request body too large")]
    TooLarge,
    /// 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.
    #[error("Too many requests")]
    LimitExceeded {
        /// When the client may try again.
        retry_after_ms: u64,
    },
    /// 503 `M_UNKNOWN` with `Retry-After`: a cluster node that cannot
    /// reach its partition owners now (it may serve reads meanwhile).
    #[error("{0}")]
    Unavailable(String),
    /// Companion mode: Synapse's own error answer, passed on as Synapse
    /// wrote it (status and body); or 502 `M_UNKNOWN` when Synapse could
    /// not be reached or answered nonsense.
    #[error(transparent)]
    Synapse(#[from] UpstreamError),
    /// 500 `M_UNKNOWN`; the cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    /// Wraps any error as an internal one.
    pub fn internal(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Internal(e.into())
    }

    /// The HTTP status and Matrix `errcode`.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotJson(_) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            Self::BadJson(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            Self::InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            Self::InvalidUsername(_) => (StatusCode::BAD_REQUEST, "M_INVALID_USERNAME"),
            Self::UserInUse => (StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            Self::MissingToken | Self::TokenGivenTwice => {
                (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN")
            }
            Self::UnknownToken => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            Self::UserDeactivated => (StatusCode::FORBIDDEN, "M_USER_DEACTIVATED"),
            Self::AuthRequired { .. } => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            Self::Unrecognized {
                method_not_allowed: false,
            } => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            Self::Unrecognized {
                method_not_allowed: true,
            } => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Self::LimitExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            Self::Synapse(UpstreamError::Status { status, .. }) => (
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                "M_UNKNOWN",
            ),
            Self::Synapse(_) => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserInUse => Self::UserInUse,
            other => Self::internal(other),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::InvalidUsername(m) => Self::InvalidUsername(m),
            AccountError::UserInUse => Self::UserInUse,
            AccountError::Store(s) => s.into(),
            AccountError::Hash(_) => Self::internal(e),
        }
    }
}

impl From<HomeserverError> for ApiError {
    fn from(e: HomeserverError) -> Self {
        match e {
            HomeserverError::BadRequest(m) => Self::BadRequest(m),
            HomeserverError::BadJson(m) => Self::BadJson(m),
            HomeserverError::Forbidden(m) => Self::Forbidden(m),
            HomeserverError::NotFound(m) => Self::NotFound(m),
            HomeserverError::UserInUse => Self::UserInUse,
            HomeserverError::AuthRequired { session, failure } => {
                Self::AuthRequired { session, failure }
            }
            HomeserverError::LimitExceeded { retry_after_ms } => {
                Self::LimitExceeded { retry_after_ms }
            }
            HomeserverError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::UnknownToken => Self::UnknownToken,
            IdentityError::Synapse(e) => Self::Synapse(e),
            IdentityError::Homeserver(e) => e.into(),
        }
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Rooms(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NotAllowed(_) => Self::Forbidden(e.to_string()),
            _ => Self::Unauthorized(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, errcode) = self.status_and_code();
        if let Self::Synapse(UpstreamError::Status { body, .. }) = self {
            // Synapse's refusal (a 401 with `soft_logout`, say) reaches the
            // client as Synapse wrote it.
            return (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
        let body = match &self {
            Self::LimitExceeded { retry_after_ms } => json!({
                "errcode": errcode,
                "error": self.to_string(),
                "retry_after_ms": retry_after_ms,
            }),
            Self::AuthRequired { session, failure } => {
                let mut body = json!({
                    "flows": [{ "stages": [crate::homeserver::uia::PASSWORD_STAGE] }],
                    "params": {},
                    "session": session,
                    "completed": [],
                });
                if let Some(failure) = failure {
                    body["errcode"] = json!(errcode);
                    body["error"] = json!(failure);
                }
                body
            }
            Self::Internal(cause) => {
                // The only log line for this failure: the chain, once.
                let mut chain = cause.to_string();
                let mut source = cause.source();
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::error!(cause = %chain, "internal error while serving a request");
                json!({ "errcode": errcode, "error": "Internal server error" })
            }
            _ => json!({ "errcode": errcode, "error": self.to_string() }),
        };
        if let Self::Unavailable(_) = &self {
            // An owner takeover lasts about a lease; a second is a fair
            // first retry.
            return (
                status,
                [(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECS)],
                Json(body),
            )
                .into_response();
        }
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let cases = [
            (ApiError::MissingToken, 401, "M_MISSING_TOKEN"),
            (ApiError::TokenGivenTwice, 401, "M_MISSING_TOKEN"),
            (ApiError::UnknownToken, 401, "M_UNKNOWN_TOKEN"),
            (ApiError::Unauthorized("no".into()), 401, "M_UNAUTHORIZED"),
            (ApiError::Forbidden("no".into()), 403, "M_FORBIDDEN"),
            (ApiError::NotFound("no".into()), 404, "M_NOT_FOUND"),
            (
                ApiError::LimitExceeded { retry_after_ms: 5 },
                429,
                "M_LIMIT_EXCEEDED",
            ),
            (
                ApiError::Unrecognized {
                    method_not_allowed: true,
                },
                405,
                "M_UNRECOGNIZED",
            ),
            (ApiError::internal("boom"), 500, "M_UNKNOWN"),
        ];
        for (err, status, code) in cases {
            let (s, c) = err.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }
}
