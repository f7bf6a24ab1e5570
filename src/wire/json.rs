//! Enum fields by name in the JSON the operators' read commands print (`--output json`; the
//! messages derive `serde::Serialize`, see `build.rs`): "SEND_STATE_QUEUED", not 2. A value
//! this build does not know is written as its number.
use serde::Serializer;

use crate::proto;

macro_rules! by_name {
    ($($name:ident: $enum:ty),* $(,)?) => {$(
        pub fn $name<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
            match <$enum>::try_from(*value) {
                Ok(e) => s.serialize_str(e.as_str_name()),
                Err(_) => s.serialize_i32(*value),
            }
        }
    )*};
}

by_name!(
    send_state: proto::SendState,
    refusal_reason: proto::RefusalReason,
    consent_state: proto::ConsentState,
);

pub fn quota_rules<S: Serializer>(values: &[i32], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(values.len()))?;
    for v in values {
        match proto::QuotaRule::try_from(*v) {
            Ok(rule) => seq.serialize_element(rule.as_str_name())?,
            Err(_) => seq.serialize_element(v)?,
        }
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use crate::proto;

    #[test]
    fn enums_are_written_by_name_and_unknown_ones_by_number() {
        let status = proto::SendStatus {
            send_id: "s-1".into(),
            state: proto::SendState::Queued as i32,
            reason: 99,
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["state"], "SEND_STATE_QUEUED");
        assert_eq!(json["reason"], 99);
        let quota = proto::PortfolioQuota {
            shadow: vec![proto::QuotaRule::Pair as i32],
            ..Default::default()
        };
        let json = serde_json::to_value(&quota).unwrap();
        assert_eq!(json["shadow"], serde_json::json!(["QUOTA_RULE_PAIR"]));
    }
}
