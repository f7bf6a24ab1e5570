//! Forwarding gRPC calls between replicas (Kafka mode): a call for a tenant whose partition
//! another replica owns is sent on to that replica (its address from the owners topic, see
//! `kafka::owners`) and its answer returned, streams included. A call is forwarded at most
//! once: one that arrives forwarded for a tenant this replica does not own (it moved in
//! between) is answered `UNAVAILABLE`, as is one whose owner is not known yet; both are
//! retryable.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::kafka::ownership::Ownership;
use crate::model::TenantId;
use crate::runtime::Gate;

pub struct Forwarder {
    ownership: Arc<Ownership>,
    configured: HashSet<String>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    pub fn new(ownership: Arc<Ownership>, tenants: impl IntoIterator<Item = String>) -> Self {
        Self {
            ownership,
            configured: tenants.into_iter().collect(),
            channels: Mutex::default(),
        }
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
            return Err(Status::unavailable(format!(
                "tenant {tenant:?} (partition {partition}) moved while this call was forwarded \
                 (a rebalance); retry"
            )));
        }
        match self.ownership.owner_of(partition) {
            Some(address) => Ok(Some((self.channel(&address)?, address))),
            // Not known: the gate says why (or, if the partition was restored meanwhile,
            // lets it be served here).
            None => match self.ownership.check(&TenantId::new(tenant)) {
                Ok(()) => Ok(None),
                Err(e) => Err(crate::grpc::status(e)),
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
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::internal(format!("owner address {address:?} is not usable: {e}")))?
            .connect_timeout(Duration::from_secs(2));
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}
