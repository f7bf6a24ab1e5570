//! One customer, one timeline, through gRPC against the `switchboard` binary (issue 17): a
//! web-chat visitor with no phone number, linking it to a WhatsApp customer, profiles with a
//! conflict, duplicate suggestions, a queue outside its business hours, and the routing rules
//! reloaded. Nothing asserts how fast anything is (the exact times are the core tests').
#[path = "support/binary.rs"]
mod binary;

use switchboard::proto::{
    self, conversations_client::ConversationsClient, customers_client::CustomersClient,
    identity::Kind, inbound_client::InboundClient,
};
use tonic::Code;

/// `support` is closed today (yesterday, today and tomorrow, UTC, are holidays: the test may
/// cross midnight); `sales` is always open.
fn config() -> String {
    let today = jiff::tz::TimeZone::UTC
        .to_datetime(jiff::Timestamp::now())
        .date();
    let days: Vec<String> = [today.yesterday().unwrap(), today, today.tomorrow().unwrap()]
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect();
    format!(
        r#"
[runtime]
tick_interval_ms = 50
[[tenants]]
id = "crm"
default_region = "ES"
default_queue = "support"
bot = "faq-bot"
[[tenants.queues]]
name = "support"
sla_target_secs = 60
max_wait_secs = 600
hours = {{ time_zone = "UTC", open = ["mon-sun 00:00-24:00"], holidays = [{}] }}
[[tenants.queues]]
name = "sales"
sla_target_secs = 60
max_wait_secs = 600
"#,
        days.join(", ")
    )
}

fn message(id: &str, text: &str) -> proto::InboundMessage {
    proto::InboundMessage {
        tenant: "crm".into(),
        provider_message_id: id.into(),
        text: text.into(),
        ..Default::default()
    }
}

fn whatsapp(phone: &str, name: &str, id: &str, text: &str) -> proto::InboundMessage {
    proto::InboundMessage {
        customer: phone.into(),
        channel: proto::Channel::Whatsapp as i32,
        profile_name: name.into(),
        ..message(id, text)
    }
}

fn identity(kind: Kind) -> Option<proto::Identity> {
    Some(proto::Identity { kind: Some(kind) })
}

#[tokio::test]
async fn identities_links_profiles_duplicates_and_hours_over_grpc() {
    let (_binary, channel, addr, dir) = binary::start(&config()).await;
    let mut inbound = InboundClient::new(channel.clone());
    let mut customers = CustomersClient::new(channel.clone());
    let mut conversations = ConversationsClient::new(channel);

    // A web-chat visitor without a phone number: routed, and support is closed, so the bot.
    let first = inbound
        .ingest(proto::InboundMessage {
            channel: proto::Channel::Webchat as i32,
            visitor_id: "v-81f2".into(),
            ..message("web-1", "hola, tengo una pregunta")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.reason(), proto::Reason::OutsideHours, "{first:?}");
    assert_eq!(first.target(), proto::Target::Bot);
    assert_eq!(first.queue, "support", "the closed queue is named");
    let web_conversation = first.conversation_id.clone();

    // The same person on WhatsApp, with a profile name.
    let phone = "+34612345678";
    let wa = inbound
        .ingest(whatsapp(
            phone,
            "María José Pérez",
            "wamid.1",
            "soy la del chat",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(wa.conversation_id, web_conversation);

    // Linked: one conversation, both histories in time order.
    let linked = customers
        .link(proto::LinkRequest {
            tenant: "crm".into(),
            a: identity(Kind::VisitorId("v-81f2".into())),
            b: identity(Kind::Phone(phone.into())),
            source: "web-chat form".into(),
            actor: "faq-bot".into(),
            reason: "the visitor gave their number".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!linked.merged_conversation_id.is_empty(), "{linked:?}");
    let conversation = conversations
        .get(proto::ConversationRef {
            tenant: "crm".into(),
            conversation_id: linked.conversation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let texts: Vec<&str> = conversation
        .context
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(texts, ["hola, tengo una pregunta", "soy la del chat"]);
    let kinds: Vec<Option<Kind>> = conversation
        .identities
        .iter()
        .map(|i| i.kind.clone())
        .collect();
    assert!(
        kinds.contains(&Some(Kind::Phone(phone.into()))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&Some(Kind::VisitorId("v-81f2".into()))),
        "{kinds:?}"
    );
    // The visitor's next message reaches that conversation.
    let again = inbound
        .ingest(proto::InboundMessage {
            channel: proto::Channel::Webchat as i32,
            visitor_id: "v-81f2".into(),
            ..message("web-2", "¿seguís ahí?")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.conversation_id, linked.conversation_id);

    // The customer by any identity, with the profile WhatsApp gave.
    let customer = customers
        .get(proto::CustomerRef {
            tenant: "crm".into(),
            identity: identity(Kind::VisitorId("v-81f2".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer.conversation_id, linked.conversation_id);
    let name = customer.profile.unwrap().name.unwrap();
    assert_eq!(
        (name.value.as_str(), name.source.as_str()),
        ("María José Pérez", "whatsapp")
    );

    // Another customer with an alike name is suggested, never merged.
    inbound
        .ingest(whatsapp(
            "+34687654321",
            "Maria Jose Perez",
            "wamid.2",
            "hola",
        ))
        .await
        .unwrap();
    let suggested = customers
        .suggest_duplicates(proto::SuggestDuplicatesRequest {
            tenant: "crm".into(),
            identity: identity(Kind::Phone("+34687654321".into())),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .suggestions;
    assert_eq!(suggested.len(), 1, "{suggested:?}");
    assert_eq!(suggested[0].conversation_id, linked.conversation_id);
    assert_eq!(suggested[0].similarity, 1.0);

    // The CRM disagrees about the name: the newer value wins, the difference is listed.
    let updated = customers
        .update_profile(proto::UpdateProfileRequest {
            tenant: "crm".into(),
            identity: identity(Kind::Phone(phone.into())),
            name: "María José Pérez Ruiz".into(),
            language: "es".into(),
            source: "crm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let profile = updated.profile.unwrap();
    assert_eq!(profile.name.unwrap().value, "María José Pérez Ruiz");
    assert_eq!(profile.language.unwrap().value, "es");
    let conflicts = customers
        .list_conflicts(proto::ListConflictsRequest {
            tenant: "crm".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .conflicts;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].field, "name");
    assert_eq!(conflicts[0].other.as_ref().unwrap().source, "whatsapp");

    // Bad input says what is wrong.
    let nobody = inbound
        .ingest(proto::InboundMessage {
            channel: proto::Channel::Webchat as i32,
            ..message("web-3", "hola")
        })
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::InvalidArgument);
    assert!(
        nobody.message().contains("email and visitor_id"),
        "{}",
        nobody.message()
    );
    let half = customers
        .link(proto::LinkRequest {
            tenant: "crm".into(),
            a: identity(Kind::Phone(phone.into())),
            source: "crm".into(),
            actor: "ops".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(half.code(), Code::InvalidArgument);
    assert!(
        half.message().contains("phone, email or visitor_id"),
        "{}",
        half.message()
    );
    let unknown = customers
        .get(proto::CustomerRef {
            tenant: "crm".into(),
            identity: identity(Kind::Email("nadie@example.com".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // The routing rules reload: support opens (no holidays), a new intent and queue appear;
    // the answer says what changed.
    let reopened = config()
        .lines()
        .map(|l| {
            if l.starts_with("hours =") {
                "hours = { time_zone = \"UTC\", open = [\"mon-sun 00:00-24:00\"] }"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + r#"
[[tenants.queues]]
name = "vip"
sla_target_secs = 10
max_wait_secs = 60
[[tenants.intents]]
name = "urgent"
mode = "human"
queue = "vip"
keywords = ["urgente"]
"#;
    std::fs::write(dir.path().join("switchboard.toml"), reopened).unwrap();
    let (ok, stdout, stderr) = binary::cli(&addr, &["config", "reload"]).await;
    assert!(ok, "{stderr}");
    for change in [
        "tenant crm: queue support: hours changed",
        "tenant crm: queue vip: added",
        "tenant crm: intent urgent: added",
        "tenant crm: quotas and numbers reloaded",
    ] {
        assert!(stdout.contains(change), "{change:?} in {stdout}");
    }
    let open = inbound
        .ingest(whatsapp("+34600000003", "", "wamid.3", "hola"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(open.reason(), proto::Reason::OutsideHours, "{open:?}");
    let urgent = inbound
        .ingest(whatsapp("+34600000004", "", "wamid.4", "es urgente"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(urgent.queue, "vip", "{urgent:?}");
    // A file that removes a queue is refused whole, saying why.
    std::fs::write(
        dir.path().join("switchboard.toml"),
        config().replace("name = \"sales\"", "name = \"sales2\""),
    )
    .unwrap();
    let (ok, _, stderr) = binary::cli(&addr, &["config", "reload"]).await;
    assert!(!ok);
    assert!(stderr.contains("restart"), "{stderr}");
}
