//! `switchboard.v1.Bots`: a bot follows the messages routed to it.
use super::*;

service!(proto::bots_server::Bots, proto::bots_client::BotsClient<Channel> {
    type SubscribeStream = EventStream<proto::BotEvent>;

    stream subscribe(&self, request: proto::BotRef) -> Self::SubscribeStream {
        let r = request.into_inner();
        let rx = self
            .runtime
            .subscribe_bot(tenant(&r.tenant)?, required("bot", &r.bot)?.to_owned())
            .await
            .map_err(status)?;
        Ok(Response::new(stream(rx, bot_event_out)))
    }
});
