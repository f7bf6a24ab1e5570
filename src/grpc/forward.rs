//! Forwarding gRPC calls between replicas (Kafka mode): a call for a tenant whose partition
//! another replica owns is sent on to that replica (its address from the owners topic, see
//! `kafka::owners`) and its answer returned, streams included. A call is forwarded at most
//! once: one that arrives forwarded for a tenant this replica does not own (it moved in
//! between) is answered `UNAVAILABLE`, as is one whose owner is not known yet or cannot be
//! reached; all are retryable, name the tenant, its partition and what is being waited for,
//! and carry a retry hint (`grpc-retry-pushback-ms`, `kafka.unavailable_retry_ms`).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::model::TenantId;
use crate::runtime::Placement;

pub struct Forwarder {
    ownership: Arc<dyn Placement>,
    configured: HashSet<String>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The retry hint on UNAVAILABLE answers, in ms.
    retry_ms: u64,
    /// With `[tls]` on: calls go to the owner over https, checked with this.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Forwarder {
    pub fn new(
        ownership: Arc<dyn Placement>,
        tenants: impl IntoIterator<Item = String>,
        retry_ms: u64,
    ) -> Self {
        Self {
            ownership,
            configured: tenants.into_iter().collect(),
            channels: Mutex::default(),
            retry_ms,
            tls: None,
        }
    }

    /// Forwards over https, checking the owners' certificates with `tls`.
    pub fn with_tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// `status` with the retry hint.
    fn hinted(&self, mut status: Status) -> Status {
        status.metadata_mut().insert(
            crate::overload::RETRY_PUSHBACK_HEADER,
            tonic::metadata::MetadataValue::from(self.retry_ms),
        );
        status
    }

    /// What the caller gets when the owner did not answer a forwarded call: the owner's
    /// own UNAVAILABLE (it names the tenant), or, when the owner could not be reached or gave
    /// no such detail, which tenant, which partition and what is being waited for.
    pub fn unreached(&self, tenant: &str, owner: &str, status: Status) -> Status {
        if status.code() != tonic::Code::Unavailable || status.message().contains(tenant) {
            return status;
        }
        let partition = self.ownership.partition_of(tenant);
        self.hinted(Status::unavailable(format!(
            "tenant {tenant:?} (partition {partition}) is served by {owner}, which did not \
             serve the call ({}): waiting for it to come back, or for the consumer group to \
             give partition {partition} to another replica (kafka.session_timeout_ms); retry",
            status.message()
        )))
    }

    /// Where a call for `tenant` is served: None here, or the channel to its owner.
    pub fn route(
        &self,
        tenant: &str,
        forwarded: bool,
    ) -> Result<Option<(Channel, String)>, Status> {
        if !self.configured.contains(tenant) {
            return Ok(None); // answered here: NOT_FOUND, or INVALID_ARGUMENT when empty
        }
        let partition = self.ownership.partition_of(tenant);
        if self.ownership.is_owned(partition) {
            return Ok(None);
        }
        if forwarded {
            return Err(self.hinted(Status::unavailable(format!(
                "tenant {tenant:?} (partition {partition}) moved while this call was forwarded \
                 (a rebalance); retry"
            ))));
        }
        match self.ownership.owner_of(partition) {
            Some(address) => Ok(Some((self.channel(&address)?, address))),
            // Not known: the gate says why (or, if the partition was restored meanwhile,
            // lets it be served here).
            None => match self.ownership.check(&TenantId::new(tenant)) {
                Ok(()) => Ok(None),
                Err(e) => Err(self.hinted(crate::wire::status(e))),
            },
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self
            .channels
            .lock()
            .expect("no panic while holding the channel cache lock");
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let unusable = |e: &dyn std::fmt::Display| {
            Status::internal(format!("owner address {address:?} is not usable: {e}"))
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| unusable(&e))?
            .connect_timeout(Duration::from_secs(2));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| unusable(&e))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}
