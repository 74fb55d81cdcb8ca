//! Who a request acts as: a [`Principal`], its tenant and its [`Permissions`].

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use wharf_contract::{DEFAULT_TENANT, ErrorCode, Identity, Permission};

use crate::problem::ApiError;

/// A set of permissions, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u32);

impl Permissions {
    pub fn all() -> Permissions {
        Permissions::of(&Permission::ALL)
    }

    pub fn of(list: &[Permission]) -> Permissions {
        Permissions(list.iter().fold(0, |bits, p| bits | bit(*p)))
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & bit(p) != 0
    }

    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .collect()
    }
}

fn bit(p: Permission) -> u32 {
    1 << (p as u32)
}

/// Who a request acts as.
#[derive(Debug, Clone)]
pub struct Principal(Arc<PrincipalInner>);

#[derive(Debug)]
pub struct PrincipalInner {
    /// `key:<id>`, `jwt:<sub>` or `anonymous`.
    pub actor: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub permissions: Permissions,
    /// When the credential stops proving anything (an API key's expiry, a token's `exp`).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Principal {
    pub fn new(actor: String, tenant: String, roles: Vec<String>, perms: Permissions) -> Self {
        Principal::with_expiry(actor, tenant, roles, perms, None)
    }

    /// A caller whose credential expires at `expires_at`.
    pub(super) fn with_expiry(
        actor: String,
        tenant: String,
        roles: Vec<String>,
        permissions: Permissions,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Self {
        Principal(Arc::new(PrincipalInner {
            actor,
            tenant,
            roles,
            permissions,
            expires_at,
        }))
    }

    /// When the credential this caller proved itself with expires, if it does.
    pub fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.expires_at
    }

    /// The API key this caller proved itself with, if it was one.
    pub fn key_id(&self) -> Option<uuid::Uuid> {
        self.0.actor.strip_prefix("key:")?.parse().ok()
    }

    /// The caller of an open gateway that sent no credentials: one, shared, not one per request.
    pub(super) fn anonymous() -> Principal {
        static ANONYMOUS: std::sync::OnceLock<Principal> = std::sync::OnceLock::new();
        ANONYMOUS
            .get_or_init(|| {
                Principal::new(
                    "anonymous".into(),
                    DEFAULT_TENANT.into(),
                    vec!["admin".into()],
                    Permissions::all(),
                )
            })
            .clone()
    }

    pub fn actor(&self) -> &str {
        &self.0.actor
    }

    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }

    pub fn can(&self, p: Permission) -> bool {
        self.0.permissions.contains(p)
    }

    /// Refuses with 403 naming the permission when the principal lacks it.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.can(p) {
            return Ok(());
        }
        let mut e = ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this needs the permission {p}, which {} lacks",
                self.actor()
            ),
        );
        e.0.missing_permission = Some(p.as_str().to_owned());
        Err(e)
    }

    /// True when an object of `tenant` is this principal's to see. An empty tenant (a task
    /// whose submission is not known yet) is nobody's.
    pub fn owns(&self, tenant: &str) -> bool {
        !tenant.is_empty() && tenant == self.tenant()
    }

    pub fn identity(&self) -> Identity {
        Identity {
            actor: self.0.actor.clone(),
            tenant: self.0.tenant.clone(),
            roles: self.0.roles.clone(),
            permissions: self.0.permissions.list(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a route without authentication asked who calls"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_sets() {
        let s = Permissions::of(&[Permission::TasksRead, Permission::KeysAdmin]);
        assert!(s.contains(Permission::TasksRead) && !s.contains(Permission::TasksSubmit));
        assert_eq!(s.list(), vec![Permission::TasksRead, Permission::KeysAdmin]);
        assert_eq!(Permissions::all().list(), Permission::ALL.to_vec());
    }
}
