//! Who is calling: every request resolves to a [`Principal`] here, and only
//! here. The only mode so far is `none` (development): the subject is
//! `anonymous` and the tenant is the path's project. Any `Authorization`
//! header is ignored and never logged. Nothing from the body or from
//! unverified headers reaches a principal.

use actix_web::HttpRequest;

use crate::config::{AuthMode, AuthSettings};
use crate::error::ApiError;

/// The subject used when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// An authenticated caller: the tenant (project or organisation) it acts in and its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub subject: String,
}

/// Resolve the principal of `req` for `tenant` (taken from the path).
pub fn authenticate(
    settings: &AuthSettings,
    _req: &HttpRequest,
    tenant: &str,
) -> Result<Principal, ApiError> {
    crate::ids::check("project or organisation", tenant).map_err(ApiError::invalid)?;
    match settings.mode {
        AuthMode::None => Ok(Principal {
            tenant: tenant.to_owned(),
            subject: ANONYMOUS.to_owned(),
        }),
    }
}
