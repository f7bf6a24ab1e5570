//! `switchboard.v1.Queues`: queue statistics (depth, wait, SLA attainment).
use super::*;

service!(proto::queues_server::Queues, proto::queues_client::QueuesClient<Channel> {
    unary stats(&self, request: proto::QueueStatsRequest) -> proto::QueueStatsResponse {
        let r = request.into_inner();
        match self
            .call(Command::QueueStats {
                tenant: tenant(&r.tenant)?,
                queue: (!r.queue.is_empty()).then_some(r.queue),
            })
            .await?
        {
            Reply::QueueStats(stats) => Ok(Response::new(proto::QueueStatsResponse {
                queues: stats.iter().map(queue_stats_out).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }
});
