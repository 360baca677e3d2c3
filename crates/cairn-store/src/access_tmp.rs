//! TEMPORARY: lets the API layer compile until the store implementations land. Deleted at merge.
#![allow(unused_variables)]
use crate::access::*;
use crate::{PageRequest, StoreResult};
use cairn_domain::Timestamp;
macro_rules! stub {
    ($t:ty) => {
        #[async_trait::async_trait]
        impl AccessStore for $t {
            async fn create_user(&self, user: UserRecord) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn user(&self, name: &str) -> StoreResult<Option<UserRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn list_users(&self, page: PageRequest) -> StoreResult<Vec<UserRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn update_user(
                &self,
                name: &str,
                patch: UserPatch,
                now: Timestamp,
            ) -> StoreResult<UserRecord> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn delete_user(&self, name: &str, now: Timestamp) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn record_login_failure(
                &self,
                name: &str,
                now: Timestamp,
                threshold: u32,
                lock_for_micros: i64,
            ) -> StoreResult<LoginFailure> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn record_login_success(&self, name: &str, now: Timestamp) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn create_api_key(&self, key: ApiKeyRecord) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn list_api_keys(
                &self,
                principal: Option<&str>,
                page: PageRequest,
            ) -> StoreResult<Vec<ApiKeyRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<ApiKeyRecord> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn touch_api_key(&self, id: &str, now: Timestamp) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn bootstrap_api_key(&self, key: ApiKeyRecord) -> StoreResult<bool> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn create_role(&self, role: RoleRecord) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn role(&self, name: &str) -> StoreResult<Option<RoleRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn roles(&self, names: &[String]) -> StoreResult<Vec<RoleRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn list_roles(&self, page: PageRequest) -> StoreResult<Vec<RoleRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn delete_role(&self, name: &str) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn create_grant(&self, grant: GrantRecord) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn grants_of(&self, principal: &str) -> StoreResult<Vec<GrantRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn list_grants(
                &self,
                filter: GrantFilter,
                page: PageRequest,
            ) -> StoreResult<Vec<GrantRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn delete_grant(&self, id: &str) -> StoreResult<GrantRecord> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn create_session(
                &self,
                session: SessionRecord,
                first: NewRefreshToken,
            ) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn rotate_refresh_token(
                &self,
                hash: &str,
                next: NewRefreshToken,
                now: Timestamp,
            ) -> StoreResult<RefreshOutcome> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn revoke_session(
                &self,
                id: &str,
                reason: &str,
                now: Timestamp,
            ) -> StoreResult<SessionRecord> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn revoke_sessions_of(
                &self,
                principal: &str,
                reason: &str,
                now: Timestamp,
            ) -> StoreResult<u64> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn ensure_signing_key(
                &self,
                key: SigningKeyRecord,
            ) -> StoreResult<SigningKeyRecord> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn rotate_signing_key(
                &self,
                key: SigningKeyRecord,
                now: Timestamp,
            ) -> StoreResult<()> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<u64> {
                unimplemented!("temporary, replaced by the real implementation")
            }
            async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEntry>> {
                unimplemented!("temporary, replaced by the real implementation")
            }
        }
    };
}

stub!(crate::postgres::PostgresStore);
