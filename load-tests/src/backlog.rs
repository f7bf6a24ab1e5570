//! A replica that starts with a backlog (`switchboard-load backlog`): the input topic is
//! filled first (`--records` inbound messages on `--partitions` partitions, one tenant on each
//! partition so every partition has its share), then switchboard starts and reads it all. The
//! report is the peak resident memory it needed for that (`VmHWM`, what the fetch and produce
//! queues' bounds are for, `kafka.fetch_queue_kbytes` and friends) and how fast it caught up.
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message as _;

use crate::drive::inbound_message;
use crate::scenario::{InboundLoad, Messages};
use crate::servers::{Child, Kafka, Kind};
use crate::{kafka, usage};

/// What a backlog run asks for.
#[derive(Debug, Clone)]
pub struct Backlog {
    pub records: u64,
    pub partitions: i32,
    pub customers: u64,
    /// How long switchboard may take to read the backlog.
    pub within: Duration,
}

/// What a backlog run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Caught {
    /// Seconds from switchboard's start until it had read and routed every record.
    pub seconds: f64,
    pub peak_rss_bytes: u64,
}

/// One tenant per partition: `t<i>`, the first names whose partition (the Java client's
/// murmur2, as switchboard and its producers key by tenant) is each partition in turn.
pub fn tenant_per_partition(partitions: i32) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; partitions as usize];
    let mut i = 0u64;
    while found.iter().any(Option::is_none) {
        let name = format!("t{i}");
        let p = switchboard::kafka::partition::partition_of(&name, partitions) as usize;
        if found[p].is_none() {
            found[p] = Some(name);
        }
        i += 1;
    }
    found.into_iter().flatten().collect()
}

/// A config serving `tenants`, each like `configs/one-tenant.toml`'s, on two shards.
pub fn tenants_config(tenants: &[String]) -> String {
    let mut toml = String::from("[runtime]\nshards = 2\n");
    for t in tenants {
        toml.push_str(&format!(
            "\n[[tenants]]\nid = \"{t}\"\ndefault_region = \"ES\"\nbot = \"faq-bot\"\n\
             default_queue = \"support\"\n[[tenants.queues]]\nname = \"support\"\n\
             sla_target_secs = 60\nmax_wait_secs = 300\n[[tenants.intents]]\n\
             name = \"order_status\"\nmode = \"bot\"\n\
             keywords = [\"order status\", \"where is my order\", \"donde esta mi pedido\"]\n"
        ));
    }
    toml
}

/// The sum of `name`'s samples whose labels include `label` (`topic="x"`), from a Prometheus
/// exposition; None when it has none.
pub fn counter_sum(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once("} ")) else {
            continue;
        };
        if labels.split(',').any(|l| l == label)
            && let Ok(v) = value.trim().parse::<f64>()
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Fills `kafka`'s inbound topic, starts switchboard on it and waits until it has read every
/// record and the broker acknowledged each one's routed decision; the time that took and
/// switchboard's peak RSS.
pub async fn run(kafka: &Kafka, backlog: &Backlog) -> anyhow::Result<Caught> {
    let inbound = kafka.topic("inbound");
    kafka::create_topics(&kafka.brokers, &[&inbound], backlog.partitions).await?;
    let tenants = tenant_per_partition(backlog.partitions);
    let load = InboundLoad::order_status(backlog.customers);
    let messages = Messages::new(&load, 1);
    let producer = kafka::producer(&kafka.brokers)?;
    let started = Instant::now();
    let records = (0..backlog.records).map(|n| {
        let tenant = &tenants[(n % tenants.len() as u64) as usize];
        (
            tenant,
            inbound_message(tenant, n, messages.nth(n)).encode_to_vec(),
        )
    });
    kafka::produce_all(&producer, &inbound, records)
        .await
        .context("producing the backlog")?;
    println!(
        "backlog: {} records on {} partitions ({} tenants, {} customers) produced in {:.1} s",
        backlog.records,
        backlog.partitions,
        tenants.len(),
        backlog.customers,
        started.elapsed().as_secs_f64()
    );
    let config = std::env::temp_dir().join(format!("{}.toml", kafka.prefix));
    std::fs::write(&config, tenants_config(&tenants))?;
    let partitions = backlog.partitions.to_string();
    let env = [("SWITCHBOARD_KAFKA__TOPIC_PARTITIONS", partitions.as_str())];
    let service =
        Child::start_with(Kind::Switchboard, Some(&config), Some(kafka), false, &env).await?;
    let started = Instant::now();
    let metrics = service
        .addresses
        .get(1)
        .context("the service printed no metrics address")?
        .clone();
    // Read, and each one's decision (or dead letter) acknowledged by the broker.
    let read = format!("topic=\"{inbound}\"");
    let answered = [kafka.topic("routed"), kafka.topic("dlq")].map(|t| format!("topic=\"{t}\""));
    let total = backlog.records as f64;
    loop {
        let text = usage::scrape(&metrics).await.unwrap_or_default();
        let read = counter_sum(&text, "switchboard_kafka_records_in_total", &read).unwrap_or(0.0);
        let routed: f64 = answered
            .iter()
            .filter_map(|t| counter_sum(&text, "switchboard_kafka_records_out_total", t))
            .sum();
        if read >= total && routed >= total {
            break;
        }
        if started.elapsed() > backlog.within {
            service.stop().await;
            anyhow::bail!(
                "in {:?} switchboard read {read} of {total} records and routed {routed}",
                backlog.within
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak = usage::of(Some(service.pid)).map_or(0, |u| u.peak_rss_bytes);
    service.stop().await;
    let _ = std::fs::remove_file(&config);
    println!(
        "switchboard read and routed {total} records in {seconds:.1} s ({:.0}/s), peak RSS {} MB",
        total / seconds,
        peak / 1_000_000
    );
    Ok(Caught {
        seconds,
        peak_rss_bytes: peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_gets_one_tenant_of_its_own() {
        let tenants = tenant_per_partition(12);
        assert_eq!(tenants.len(), 12);
        let mut partitions: Vec<i32> = tenants
            .iter()
            .map(|t| switchboard::kafka::partition::partition_of(t, 12))
            .collect();
        partitions.sort_unstable();
        assert_eq!(partitions, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn the_generated_config_serves_every_tenant() {
        let tenants = tenant_per_partition(4);
        let config = switchboard::config::Config::from_toml_str(&tenants_config(&tenants))
            .expect("a valid config");
        let ids: Vec<&str> = config.tenants.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, tenants.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn a_counter_is_summed_over_the_series_with_the_label() {
        let text = "# TYPE c counter\n\
                    c{topic=\"a\",partition=\"0\"} 3\n\
                    c{partition=\"1\",topic=\"a\"} 4\n\
                    c{topic=\"b\"} 100\n\
                    c_other{topic=\"a\"} 9\n";
        assert_eq!(counter_sum(text, "c", "topic=\"a\""), Some(7.0));
        assert_eq!(counter_sum(text, "c", "topic=\"z\""), None);
    }
}
