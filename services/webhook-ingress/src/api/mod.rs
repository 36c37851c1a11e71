//! `WebhookIngressService`: `Ingest` (the pipeline in [`ingest`]) and the operators' surface —
//! endpoints and their secrets ([`endpoints`]), stored and quarantined events, dead letters and
//! retention ([`events`]). Each RPC is one function in its area's module; this file only routes.
use std::sync::Arc;

use maxai_kit::sealed::MasterKey;
use maxai_proto::maxai::webhook::v1::{
    self as pb, webhook_ingress_service_server::WebhookIngressService,
};
use tonic::{Request, Response, Status};

use crate::{
    config::{ProviderKeys, WebhookConfig},
    domain::ResolvedEndpoint,
    store::{EventStore, GroupCommitter},
};

pub mod convert;
pub mod endpoints;
pub mod events;
pub mod ingest;

/// What every RPC works with.
pub struct WebhookApi {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) committer: Arc<GroupCommitter>,
    /// Seals and opens endpoint secrets (owner: the endpoint's resource name).
    pub(crate) master: Arc<MasterKey>,
    pub(crate) config: Arc<WebhookConfig>,
    /// The providers' own verification keys (GHL, PayPal), parsed once.
    pub(crate) keys: Arc<ProviderKeys>,
    /// Woken whenever an event is stored, so an idle dispatcher delivers it at once.
    pub(crate) stored: Option<Arc<tokio::sync::Notify>>,
    /// Recently resolved endpoints (and unknown accounts), so a burst of webhooks does not read
    /// the endpoint and its secrets for every request.
    resolved: maxai_kit::ttl_map::TtlMap<Option<ResolvedEndpoint>>,
    /// Tenants' retention settings as the read APIs show them (the purge times of each record),
    /// so reading one event is one storage read. Changes through this replica take effect at
    /// once; the purge job itself always reads them from the store.
    retention: maxai_kit::ttl_map::TtlMap<Option<crate::domain::RetentionSettings>>,
}

/// How long a resolution is reused. Changes made through this replica take effect at once
/// (the cache is cleared); another replica's changes within this time.
const RESOLVE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
const RESOLVE_CAPACITY: usize = 10_000;

impl WebhookApi {
    pub fn new(
        store: Arc<dyn EventStore>,
        committer: Arc<GroupCommitter>,
        master: Arc<MasterKey>,
        config: Arc<WebhookConfig>,
        keys: Arc<ProviderKeys>,
        stored: Option<Arc<tokio::sync::Notify>>,
    ) -> Self {
        WebhookApi {
            store,
            committer,
            master,
            config,
            keys,
            stored,
            resolved: maxai_kit::ttl_map::TtlMap::new(RESOLVE_CAPACITY),
            retention: maxai_kit::ttl_map::TtlMap::new(RESOLVE_CAPACITY),
        }
    }

    /// The endpoint `lookup` (account keys, or an endpoint named in the URL) resolves to.
    pub(crate) async fn resolve(
        &self,
        provider: crate::domain::Provider,
        lookup: &[String],
        named: Option<&crate::domain::EndpointKey>,
        now_us: i64,
    ) -> maxai_kit::Result<Option<ResolvedEndpoint>> {
        let key = match named {
            Some(k) => format!(
                "{}|named|{}/{}/{}",
                provider.as_str(),
                k.tenant_id,
                k.client_id,
                k.id
            ),
            None => format!("{}|{}", provider.as_str(), lookup.join("|")),
        };
        if let Some(hit) = self.resolved.get(&key) {
            return Ok(hit);
        }
        let found = match named {
            Some(k) => self.store.resolve_endpoint(k, now_us).await?,
            None if lookup.is_empty() => None,
            None => self.store.resolve(provider, lookup, now_us).await?,
        };
        // Never past the moment a secret of it stops verifying.
        let ttl = found
            .iter()
            .flat_map(|r| &r.secrets)
            .filter_map(|s| s.expire_at_us)
            .map(|e| std::time::Duration::from_micros((e - now_us).max(0) as u64))
            .fold(RESOLVE_TTL, std::cmp::min);
        self.resolved.insert(key, found.clone(), ttl);
        Ok(found)
    }

    /// Forgets every cached resolution (after an endpoint changed here).
    pub(crate) fn forget_endpoints(&self) {
        self.resolved.clear();
    }

    /// The tenant's retention settings for display, reused for as long as a resolution is.
    pub(crate) async fn display_retention(
        &self,
        tenant_id: &str,
    ) -> maxai_kit::Result<Option<crate::domain::RetentionSettings>> {
        if let Some(hit) = self.retention.get(tenant_id) {
            return Ok(hit);
        }
        let stored = self.store.get_retention(tenant_id).await?;
        self.retention
            .insert(tenant_id.to_owned(), stored.clone(), RESOLVE_TTL);
        Ok(stored)
    }

    /// Shows `settings` from now on (they were just stored here).
    pub(crate) fn retention_changed(&self, settings: &crate::domain::RetentionSettings) {
        self.retention.insert(
            settings.tenant_id.clone(),
            Some(settings.clone()),
            RESOLVE_TTL,
        );
    }
}

#[tonic::async_trait]
impl WebhookIngressService for WebhookApi {
    async fn ingest(
        &self,
        request: Request<pb::IngestRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        ingest::ingest(self, request).await
    }

    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        endpoints::create(self, request).await
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::GetWebhookEndpointResponse>, Status> {
        endpoints::get(self, request).await
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        endpoints::list(self, request).await
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<pb::UpdateWebhookEndpointResponse>, Status> {
        endpoints::update(self, request).await
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        endpoints::delete(self, request).await
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        endpoints::rotate_secret(self, request).await
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::GetEventResponse>, Status> {
        events::get_event(self, request).await
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        events::list_events(self, request).await
    }

    async fn get_quarantined_event(
        &self,
        request: Request<pb::GetQuarantinedEventRequest>,
    ) -> Result<Response<pb::GetQuarantinedEventResponse>, Status> {
        events::get_quarantined(self, request).await
    }

    async fn list_quarantined_events(
        &self,
        request: Request<pb::ListQuarantinedEventsRequest>,
    ) -> Result<Response<pb::ListQuarantinedEventsResponse>, Status> {
        events::list_quarantined(self, request).await
    }

    async fn replay_quarantined_event(
        &self,
        request: Request<pb::ReplayQuarantinedEventRequest>,
    ) -> Result<Response<pb::ReplayQuarantinedEventResponse>, Status> {
        ingest::replay_quarantined(self, request).await
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::GetDeadLetterResponse>, Status> {
        events::get_dead_letter(self, request).await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        events::list_dead_letters(self, request).await
    }

    async fn replay_dead_letter(
        &self,
        request: Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
        events::replay_dead_letter(self, request).await
    }

    async fn get_event_retention_settings(
        &self,
        request: Request<pb::GetEventRetentionSettingsRequest>,
    ) -> Result<Response<pb::GetEventRetentionSettingsResponse>, Status> {
        events::get_retention(self, request).await
    }

    async fn update_event_retention_settings(
        &self,
        request: Request<pb::UpdateEventRetentionSettingsRequest>,
    ) -> Result<Response<pb::UpdateEventRetentionSettingsResponse>, Status> {
        events::update_retention(self, request).await
    }
}
