//! Templates on the wire: the `Template` of a send request or a dispatch record read into the
//! model's [`Template`] and written back out, and the rules a template send must meet on
//! `Send`.
//!
//! Reading ([`template_in`]) checks only the shape: known enum values, a value in every
//! parameter. [`check`] adds the platform's rules (name and language syntax, which parameter
//! goes where, the bounds below). A send request gets both; a dispatch record is only read,
//! since it was checked when it was sent, and a takeover must not stop on a rule added since.
use std::sync::Arc;

use super::{Invalid, enum_field, invalid};
use crate::config::Category;
use crate::model::{ButtonSubType, ComponentKind, Template, TemplateComponent, TemplateParameter};
use crate::proto;

/// Meta's limit on a template name.
pub const MAX_NAME_CHARS: usize = 512;
/// Meta allows at most 10 buttons in a template: indexes 0 to 9.
pub const MAX_BUTTONS: u8 = 10;
/// Parameters in one send, all components together. Ours, not Meta's: far above what an
/// approved template uses, and a bound on what a queued send holds in memory.
pub const MAX_PARAMETERS: usize = 100;
/// Bytes in one parameter value (text, link, code). Ours too, for the same reason: a
/// WhatsApp text message stops at 4,096 characters.
pub const MAX_VALUE_BYTES: usize = 4_096;

/// The content and template of a send request, checked against its category:
/// - a session send carries text in `content` and no template;
/// - a template send carries a checked template; `content` is then empty or the template's
///   name, and becomes the name;
/// - the older form, a template send with no template, sends the template named by
///   `content` without parameters, in the sender's `cloud_api.template_language`.
pub fn send_template(
    category: Category,
    content: String,
    template: Option<proto::Template>,
) -> Result<(String, Option<Arc<Template>>), Invalid> {
    match (category, template) {
        (Category::Session, Some(_)) => Err(invalid(
            "template",
            "is set on a session send; a session message carries its text in `content`: leave \
             template unset, or send with a template category (marketing, utility, authentication)",
        )),
        (Category::Session, None) => Ok((content, None)),
        (_, None) if content.trim().is_empty() => Err(invalid(
            "template",
            format!(
                "is required for a {} send: set template.name and template.language (or, the \
                 older form, content to the template's name)",
                format!("{category:?}").to_lowercase()
            ),
        )),
        (_, None) => Ok((content, None)),
        (_, Some(t)) => {
            let t = template_in(t)?;
            check(&t)?;
            if !content.is_empty() && content != t.name {
                return Err(invalid(
                    "content",
                    format!(
                        "is {content:?} but template.name is {:?}; leave content empty on a \
                         template send",
                        t.name
                    ),
                ));
            }
            Ok((t.name.clone(), Some(Arc::new(t))))
        }
    }
}

/// Reads a template, checking its shape only (see the module docs).
pub fn template_in(t: proto::Template) -> Result<Template, Invalid> {
    let components = t
        .components
        .into_iter()
        .enumerate()
        .map(|(i, c)| component_in(i, c))
        .collect::<Result<_, _>>()?;
    Ok(Template {
        name: t.name,
        language: t.language,
        components,
    })
}

fn component_in(i: usize, c: proto::TemplateComponent) -> Result<TemplateComponent, Invalid> {
    let at = |problem: String| invalid("template.components", format!("component {i}: {problem}"));
    // The enum checks name their own field ("type", "sub_type"): keep it in the problem.
    let nested = |e: Invalid| at(format!("{} {}", e.field, e.problem));
    let kind = enum_field(
        "type",
        c.r#type,
        "COMPONENT_TYPE_HEADER, COMPONENT_TYPE_BODY, COMPONENT_TYPE_BUTTON",
        |t: proto::ComponentType| match t {
            proto::ComponentType::Unspecified => None,
            proto::ComponentType::Header => Some(ComponentKind::Header),
            proto::ComponentType::Body => Some(ComponentKind::Body),
            // Filled in below.
            proto::ComponentType::Button => Some(ComponentKind::Button {
                sub_type: ButtonSubType::QuickReply,
                index: 0,
            }),
        },
    )
    .map_err(nested)?;
    let kind = match kind {
        ComponentKind::Button { .. } => ComponentKind::Button {
            sub_type: enum_field(
                "sub_type",
                c.sub_type,
                "BUTTON_SUB_TYPE_QUICK_REPLY, BUTTON_SUB_TYPE_URL, BUTTON_SUB_TYPE_COPY_CODE",
                |t: proto::ButtonSubType| match t {
                    proto::ButtonSubType::Unspecified => None,
                    proto::ButtonSubType::QuickReply => Some(ButtonSubType::QuickReply),
                    proto::ButtonSubType::Url => Some(ButtonSubType::Url),
                    proto::ButtonSubType::CopyCode => Some(ButtonSubType::CopyCode),
                },
            )
            .map_err(nested)?,
            index: u8::try_from(c.index)
                .ok()
                .filter(|&index| index < MAX_BUTTONS)
                .ok_or_else(|| {
                    at(format!(
                        "index {} is not a button position; buttons are numbered from 0 to {}",
                        c.index,
                        MAX_BUTTONS - 1
                    ))
                })?,
        },
        other => other,
    };
    let parameters = c
        .parameters
        .into_iter()
        .enumerate()
        .map(|(j, p)| {
            parameter_in(p).ok_or_else(|| {
                at(format!(
                    "parameter {j} has no value; set one of text, currency, date_time, image, \
                     document, video, payload, coupon_code"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(TemplateComponent { kind, parameters })
}

/// None: the oneof is not set.
fn parameter_in(p: proto::TemplateParameter) -> Option<TemplateParameter> {
    use proto::template_parameter::Value;
    Some(match p.value? {
        Value::Text(t) => TemplateParameter::Text(t),
        Value::Currency(c) => TemplateParameter::Currency {
            fallback_value: c.fallback_value,
            code: c.code,
            amount_1000: c.amount_1000,
        },
        Value::DateTime(d) => TemplateParameter::DateTime {
            fallback_value: d.fallback_value,
        },
        Value::Image(m) => TemplateParameter::Image { link: m.link },
        Value::Document(d) => TemplateParameter::Document {
            link: d.link,
            filename: (!d.filename.is_empty()).then_some(d.filename),
        },
        Value::Video(m) => TemplateParameter::Video { link: m.link },
        Value::Payload(p) => TemplateParameter::Payload(p),
        Value::CouponCode(c) => TemplateParameter::CouponCode(c),
    })
}

pub fn template_out(t: &Template) -> proto::Template {
    proto::Template {
        name: t.name.clone(),
        language: t.language.clone(),
        components: t.components.iter().map(component_out).collect(),
    }
}

fn component_out(c: &TemplateComponent) -> proto::TemplateComponent {
    let (r#type, sub_type, index) = match c.kind {
        ComponentKind::Header => (proto::ComponentType::Header, 0, 0),
        ComponentKind::Body => (proto::ComponentType::Body, 0, 0),
        ComponentKind::Button { sub_type, index } => (
            proto::ComponentType::Button,
            match sub_type {
                ButtonSubType::QuickReply => proto::ButtonSubType::QuickReply,
                ButtonSubType::Url => proto::ButtonSubType::Url,
                ButtonSubType::CopyCode => proto::ButtonSubType::CopyCode,
            } as i32,
            u32::from(index),
        ),
    };
    proto::TemplateComponent {
        r#type: r#type as i32,
        sub_type,
        index,
        parameters: c.parameters.iter().map(parameter_out).collect(),
    }
}

fn parameter_out(p: &TemplateParameter) -> proto::TemplateParameter {
    use proto::template_parameter::Value;
    let value = match p.clone() {
        TemplateParameter::Text(t) => Value::Text(t),
        TemplateParameter::Currency {
            fallback_value,
            code,
            amount_1000,
        } => Value::Currency(proto::Currency {
            fallback_value,
            code,
            amount_1000,
        }),
        TemplateParameter::DateTime { fallback_value } => {
            Value::DateTime(proto::DateTime { fallback_value })
        }
        TemplateParameter::Image { link } => Value::Image(proto::MediaLink { link }),
        TemplateParameter::Document { link, filename } => Value::Document(proto::DocumentLink {
            link,
            filename: filename.unwrap_or_default(),
        }),
        TemplateParameter::Video { link } => Value::Video(proto::MediaLink { link }),
        TemplateParameter::Payload(p) => Value::Payload(p),
        TemplateParameter::CouponCode(c) => Value::CouponCode(c),
    };
    proto::TemplateParameter { value: Some(value) }
}

/// The platform's rules for a template send (see the constants above for the bounds).
pub fn check(t: &Template) -> Result<(), Invalid> {
    if t.name.is_empty() {
        return Err(invalid(
            "template.name",
            "is required: the name the template was approved under, e.g. \"order_update\"",
        ));
    }
    if t.name.chars().count() > MAX_NAME_CHARS
        || !t
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(
            "template.name",
            format!(
                "{:?} is not a template name; Meta's are lowercase letters, digits and \
                 underscores, at most {MAX_NAME_CHARS} characters, e.g. \"order_update\"",
                t.name
            ),
        ));
    }
    if !language_code(&t.language) {
        let what = match t.language.as_str() {
            "" => "is required".to_owned(),
            other => format!("{other:?} is not a language code"),
        };
        return Err(invalid(
            "template.language",
            format!(
                "{what}; use the code the template was approved in, like \"en\", \"en_US\", \
                 \"pt_BR\" or \"es_MX\""
            ),
        ));
    }
    let total: usize = t.components.iter().map(|c| c.parameters.len()).sum();
    if total > MAX_PARAMETERS {
        return Err(invalid(
            "template.components",
            format!("hold {total} parameters; a send takes at most {MAX_PARAMETERS}"),
        ));
    }
    let (mut header, mut body, mut buttons) = (false, false, [false; MAX_BUTTONS as usize]);
    for (i, c) in t.components.iter().enumerate() {
        let at = |problem: String| {
            invalid(
                "template.components",
                format!("component {i} ({}): {problem}", describe(c.kind)),
            )
        };
        let seen = match c.kind {
            ComponentKind::Header => &mut header,
            ComponentKind::Body => &mut body,
            ComponentKind::Button { index, .. } => match buttons.get_mut(usize::from(index)) {
                Some(seen) => seen,
                None => {
                    return Err(at(format!(
                        "buttons are numbered from 0 to {}",
                        MAX_BUTTONS - 1
                    )));
                }
            },
        };
        if std::mem::replace(seen, true) {
            return Err(at(
                "comes twice; give each header, body and button index once".into(),
            ));
        }
        let (n, allowed) = (c.parameters.len(), accepts(c.kind));
        match c.kind {
            _ if n == 0 => {
                return Err(at(
                    "has no parameters; leave a component without variables out".into(),
                ));
            }
            ComponentKind::Header if n > 1 => {
                return Err(at(format!("has {n} parameters; a header takes one")));
            }
            ComponentKind::Button { .. } if n > 1 => {
                return Err(at(format!("has {n} parameters; a button takes one")));
            }
            _ => {}
        }
        for (j, p) in c.parameters.iter().enumerate() {
            if !allowed.contains(&p.kind()) {
                return Err(at(format!(
                    "parameter {j} is a {}; this component takes {}",
                    p.kind(),
                    allowed.join(", ")
                )));
            }
            value_ok(p).map_err(|problem| at(format!("parameter {j} ({}) {problem}", p.kind())))?;
        }
    }
    Ok(())
}

/// "en", "fil", "en_US", "pt_BR": a lowercase language, an optional uppercase region.
fn language_code(code: &str) -> bool {
    let (language, region) = match code.split_once('_') {
        Some((language, region)) => (language, Some(region)),
        None => (code, None),
    };
    (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

fn describe(kind: ComponentKind) -> String {
    match kind {
        ComponentKind::Header => "header".into(),
        ComponentKind::Body => "body".into(),
        ComponentKind::Button { sub_type, index } => {
            format!("{} button {index}", sub_type.as_str())
        }
    }
}

/// The parameter types a component takes (as the Cloud API names them).
fn accepts(kind: ComponentKind) -> &'static [&'static str] {
    match kind {
        ComponentKind::Header => &[
            "text",
            "currency",
            "date_time",
            "image",
            "document",
            "video",
        ],
        ComponentKind::Body => &["text", "currency", "date_time"],
        ComponentKind::Button { sub_type, .. } => match sub_type {
            ButtonSubType::QuickReply => &["payload"],
            ButtonSubType::Url => &["text"],
            ButtonSubType::CopyCode => &["coupon_code"],
        },
    }
}

/// A parameter's values; the error completes "parameter 0 (text) …".
fn value_ok(p: &TemplateParameter) -> Result<(), String> {
    use TemplateParameter as P;
    let values: [Option<&str>; 2] = match p {
        P::Text(v) | P::Payload(v) | P::CouponCode(v) => [Some(v), None],
        P::Currency {
            fallback_value,
            code,
            ..
        } => [Some(fallback_value), Some(code)],
        P::DateTime { fallback_value } => [Some(fallback_value), None],
        P::Image { link } | P::Video { link } => [Some(link), None],
        P::Document { link, filename } => [Some(link), filename.as_deref()],
    };
    if let Some(long) = values
        .into_iter()
        .flatten()
        .find(|v| v.len() > MAX_VALUE_BYTES)
    {
        return Err(format!(
            "has a value of {} bytes; a value takes at most {MAX_VALUE_BYTES}",
            long.len()
        ));
    }
    let filled = |what: &str, value: &str| {
        if value.trim().is_empty() {
            Err(format!("{what} is empty; give the value to show"))
        } else {
            Ok(())
        }
    };
    match p {
        P::Text(v) | P::Payload(v) | P::CouponCode(v) => filled(p.kind(), v),
        P::Currency {
            fallback_value,
            code,
            ..
        } => {
            filled("fallback_value", fallback_value)?;
            if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(format!(
                    "code {code:?} is not a currency code; use ISO 4217, like \"USD\" or \"EUR\""
                ))
            }
        }
        P::DateTime { fallback_value } => filled("fallback_value", fallback_value),
        P::Image { link } | P::Video { link } | P::Document { link, .. } => {
            let rest = link
                .strip_prefix("https://")
                .or_else(|| link.strip_prefix("http://"));
            if rest.is_some_and(|r| !r.is_empty()) {
                Ok(())
            } else {
                Err(format!(
                    "link {link:?} is not a URL; give a public https:// link"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::template_parameter::Value;

    /// The order-update template of docs/sends.md: an image header, a body with text, currency
    /// and date, a quick-reply button.
    fn order_update_model() -> Template {
        let component = |kind, parameters| TemplateComponent { kind, parameters };
        Template {
            name: "order_update".into(),
            language: "en_US".into(),
            components: vec![
                component(
                    ComponentKind::Header,
                    vec![TemplateParameter::Image {
                        link: "https://example.com/box.jpg".into(),
                    }],
                ),
                component(
                    ComponentKind::Body,
                    vec![
                        TemplateParameter::Text("Ana".into()),
                        TemplateParameter::Currency {
                            fallback_value: "$10.99".into(),
                            code: "USD".into(),
                            amount_1000: 10_990,
                        },
                        TemplateParameter::DateTime {
                            fallback_value: "May 1".into(),
                        },
                    ],
                ),
                component(
                    ComponentKind::Button {
                        sub_type: ButtonSubType::QuickReply,
                        index: 0,
                    },
                    vec![TemplateParameter::Payload("STOP".into())],
                ),
            ],
        }
    }

    /// The same as a send request carries it.
    fn order_update() -> proto::Template {
        template_out(&order_update_model())
    }

    fn send(
        category: Category,
        content: &str,
        template: Option<proto::Template>,
    ) -> Result<(String, Option<Arc<Template>>), Invalid> {
        send_template(category, content.into(), template)
    }

    /// The field and problem of the refusal of `template` on a utility send.
    fn refusal(template: proto::Template) -> (&'static str, String) {
        let e = send(Category::Utility, "", Some(template)).unwrap_err();
        (e.field, e.problem)
    }

    #[test]
    fn a_template_send_carries_its_checked_template_and_its_name_as_content() {
        // Written out and read back as it was (a dispatch record carries it the same way).
        let (content, template) = send(Category::Utility, "", Some(order_update())).unwrap();
        assert_eq!(content, "order_update");
        assert_eq!(template.as_deref(), Some(&order_update_model()));
        assert_eq!(
            order_update().components[2],
            proto::TemplateComponent {
                r#type: proto::ComponentType::Button as i32,
                sub_type: proto::ButtonSubType::QuickReply as i32,
                index: 0,
                parameters: vec![proto::TemplateParameter {
                    value: Some(Value::Payload("STOP".into()))
                }],
            }
        );
        // Content may repeat the name; it may not name another template.
        assert!(send(Category::Marketing, "order_update", Some(order_update())).is_ok());
        let e = send(Category::Marketing, "promo", Some(order_update())).unwrap_err();
        assert_eq!(e.field, "content");
    }

    #[test]
    fn the_older_form_and_session_messages_keep_working() {
        // A template by name only: content is the name, no template (the sender's language).
        assert_eq!(
            send(Category::Utility, "order_shipped", None).unwrap(),
            ("order_shipped".into(), None)
        );
        assert_eq!(
            send(Category::Session, "hola", None).unwrap(),
            ("hola".into(), None)
        );
        let e = send(Category::Marketing, " ", None).unwrap_err();
        assert_eq!(e.field, "template");
        assert!(
            e.problem.contains("template.name and template.language"),
            "{e}"
        );
        // A session message carries text, never a template.
        let e = send(Category::Session, "hola", Some(order_update())).unwrap_err();
        assert_eq!(e.field, "template");
        assert!(e.problem.contains("session"), "{e}");
    }

    #[test]
    fn names_and_language_codes_follow_metas_rules() {
        for name in [
            "",
            "Order_Update",
            "order-update",
            "order update",
            &"a".repeat(513),
        ] {
            let t = proto::Template {
                name: name.into(),
                ..order_update()
            };
            assert_eq!(refusal(t).0, "template.name", "{name:?}");
        }
        for language in ["en", "en_US", "pt_BR", "es_MX", "fil", "zh_HK"] {
            let t = proto::Template {
                language: language.into(),
                ..order_update()
            };
            assert!(send(Category::Utility, "", Some(t)).is_ok(), "{language}");
        }
        for language in ["", "EN", "en-US", "en_us", "english", "e", "en_USA", "en_"] {
            let t = proto::Template {
                language: language.into(),
                ..order_update()
            };
            let (field, problem) = refusal(t);
            assert_eq!(field, "template.language", "{language:?}");
            assert!(problem.contains("en_US"), "says what to use: {problem}");
        }
    }

    #[test]
    fn components_and_parameters_are_checked_and_the_refusal_says_where() {
        let with = |f: &dyn Fn(&mut proto::Template)| {
            let mut t = order_update();
            f(&mut t);
            refusal(t)
        };
        let (field, problem) = with(&|t| t.components[0].r#type = 0);
        assert_eq!(field, "template.components");
        assert!(
            problem.starts_with("component 0: type is required")
                && problem.contains("COMPONENT_TYPE_HEADER"),
            "{problem}"
        );
        assert!(
            with(&|t| t.components[0].r#type = 9)
                .1
                .contains("unknown value 9")
        );
        let (_, problem) = with(&|t| t.components[2].sub_type = 0);
        assert!(problem.contains("sub_type is required"), "{problem}");
        let (_, problem) = with(&|t| t.components[2].index = 10);
        assert!(problem.contains("0 to 9"), "{problem}");
        let (_, problem) = with(&|t| t.components[1].parameters[0].value = None);
        assert!(problem.contains("parameter 0 has no value"), "{problem}");
        let (_, problem) =
            with(&|t| t.components[1].parameters[0].value = Some(Value::Text("  ".into())));
        assert_eq!(
            problem,
            "component 1 (body): parameter 0 (text) text is empty; give the value to show"
        );
        // Each parameter where the Cloud API takes it.
        let (_, problem) =
            with(&|t| t.components[1].parameters[0].value = Some(Value::Payload("STOP".into())));
        assert_eq!(
            problem,
            "component 1 (body): parameter 0 is a payload; this component takes text, currency, date_time"
        );
        let (_, problem) =
            with(&|t| t.components[2].parameters[0].value = Some(Value::Text("STOP".into())));
        assert!(
            problem.starts_with("component 2 (quick_reply button 0): parameter 0 is a text"),
            "{problem}"
        );
        let (_, problem) = with(&|t| {
            let image = t.components[0].parameters[0].clone();
            t.components[0].parameters.push(image);
        });
        assert!(problem.contains("a header takes one"), "{problem}");
        let (_, problem) = with(&|t| t.components[1].parameters.clear());
        assert!(problem.contains("has no parameters"), "{problem}");
        let (_, problem) = with(&|t| {
            let button = t.components[2].clone();
            t.components.push(button);
        });
        assert!(
            problem.starts_with("component 3 (quick_reply button 0): comes twice"),
            "{problem}"
        );
        // Values.
        let (_, problem) = with(&|t| {
            t.components[0].parameters[0].value = Some(Value::Image(proto::MediaLink {
                link: "box.jpg".into(),
            }))
        });
        assert!(problem.contains("https://"), "{problem}");
        let (_, problem) = with(&|t| {
            t.components[1].parameters[1].value = Some(Value::Currency(proto::Currency {
                fallback_value: "10,99 €".into(),
                code: "eur".into(),
                amount_1000: 10_990,
            }))
        });
        assert!(problem.contains("ISO 4217"), "{problem}");
        let (_, problem) = with(&|t| {
            t.components[1].parameters[0].value = Some(Value::Text("x".repeat(MAX_VALUE_BYTES + 1)))
        });
        assert!(problem.contains("at most 4096"), "{problem}");
        // A template built in code (not read from the wire) is held to the same bound.
        let mut far = order_update_model();
        far.components[2].kind = ComponentKind::Button {
            sub_type: ButtonSubType::QuickReply,
            index: 12,
        };
        assert!(check(&far).unwrap_err().problem.contains("0 to 9"));
        // The bound on parameters.
        let (_, problem) = with(&|t| {
            let text = t.components[1].parameters[0].clone();
            t.components[1].parameters = vec![text; MAX_PARAMETERS + 1];
        });
        assert!(problem.contains("at most 100"), "{problem}");
    }

    #[test]
    fn a_dispatch_record_carries_the_template_to_the_egress_and_back() {
        use crate::core::quota::{Dispatch, SendId};
        let (content, template) = send(Category::Utility, "", Some(order_update())).unwrap();
        let dispatch = Dispatch {
            id: SendId(7),
            from: "106540352242922".into(),
            to: crate::core::identity::normalize("+34612345678", phonenumber::country::Id::ES)
                .unwrap(),
            category: Category::Utility,
            content: content.into(),
            template,
            idempotency_key: "k".into(),
            counted: true,
            at: crate::clock::Timestamp(1_700_000_000_000),
        };
        let tenant = crate::model::TenantId::new("acme");
        let record = crate::wire::dispatch_out(&tenant, &dispatch, "sb1:acme:s-7".into());
        assert_eq!(record.template, Some(order_update()));
        assert_eq!(crate::wire::dispatch_in(&record).unwrap(), dispatch);
        // A record without one (a send by name, or written before templates) reads as before.
        let by_name = proto::Dispatch {
            template: None,
            ..record
        };
        assert_eq!(crate::wire::dispatch_in(&by_name).unwrap().template, None);
    }
}
