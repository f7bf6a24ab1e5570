//! TLS on both listeners with a certificate generated here (rcgen): gRPC over https with the
//! certificate as the trusted root, /metrics over HTTPS; plain connections are refused; in
//! Kafka mode calls are forwarded between replicas over https.
use switchboard::config::Config;
use switchboard::proto;
use switchboard::server::Parts;

mod common;
#[path = "support/suite.rs"]
mod suite;
use common::Server;

#[tokio::test]
async fn grpc_and_metrics_serve_tls_with_the_configured_certificate() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let dir = std::env::temp_dir().join(format!("switchboard-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let mut config = Config::from_toml_str(switchboard::config::EMBEDDED_DEFAULT).unwrap();
    config.tls.cert_file = Some(cert_file);
    config.tls.key_file = Some(key_file);
    let server = Server::start(config, Parts::default()).await;

    // gRPC over TLS, trusting the generated certificate.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection");
    let decision = proto::inbound_client::InboundClient::new(channel)
        .ingest(proto::InboundMessage {
            tenant: "demo".into(),
            customer: "+34612345678".into(),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: "wamid.tls-1".into(),
            text: "hola, ¿dónde está mi pedido?".into(),
            business_number: String::new(),
            ..Default::default()
        })
        .await
        .expect("routed over TLS")
        .into_inner();
    assert_eq!(decision.target(), proto::Target::Bot);

    // A plain-text gRPC client gets nowhere.
    let plain = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let r = proto::inbound_client::InboundClient::new(channel)
            .ingest(proto::InboundMessage::default())
            .await;
        assert!(r.is_err(), "plain text answered: {r:?}");
    }

    // /metrics over HTTPS; plain HTTP is not answered.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = client
        .get(format!(
            "https://localhost:{}/metrics",
            server.metrics.port()
        ))
        .send()
        .await
        .expect("HTTPS /metrics")
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("switchboard_routing_decisions_total"),
        "{body}"
    );
    let plain = reqwest::get(format!("http://{}/metrics", server.metrics)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn half_a_tls_config_names_the_missing_file() {
    let text = format!(
        "{}\n[tls]\ncert_file = \"/etc/switchboard/cert.pem\"\n",
        switchboard::config::EMBEDDED_DEFAULT
    );
    let e = Config::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("tls.key_file"), "{e}");
}

/// Kafka mode under TLS: a call for the tenant another replica owns is forwarded to it over
/// https, checked against the configured CA (librdkafka's mock cluster; two replicas, one
/// tenant each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_calls_go_over_https_under_tls() {
    use switchboard::grpc::SERVED_BY_HEADER;
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let dir = std::env::temp_dir().join(format!("switchboard-tls-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();

    let cluster = suite::mock_cluster(2);
    let tenants = suite::one_tenant_per_partition(2);
    let toml = suite::replicas_toml(&cluster.bootstrap_servers(), &tenants, false);
    let mut config = Config::from_toml_str(&toml).unwrap();
    config.tls.cert_file = Some(cert_file);
    config.tls.key_file = Some(key_file);
    let a = Server::start(config.clone(), Parts::default()).await;
    let b = Server::start(config, Parts::default()).await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", a.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection to replica a");

    // Until the group has split the partitions: some tenant's call on a is served by b.
    let forwarded = common::guard(async {
        loop {
            for t in &tenants {
                let answer = proto::quotas_client::QuotasClient::new(channel.clone())
                    .get(proto::QuotaRef { tenant: t.clone() })
                    .await;
                if let Ok(r) = answer
                    && let Some(by) = r.metadata().get(SERVED_BY_HEADER)
                {
                    return (t.clone(), by.to_str().unwrap().to_owned());
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        forwarded.1,
        b.grpc.to_string(),
        "forwarded to b over https: {forwarded:?}"
    );
    a.stop().await;
    b.stop().await;
    drop(cluster);
    std::fs::remove_dir_all(&dir).unwrap();
}
