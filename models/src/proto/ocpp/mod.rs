//! OCPP-J 1.6 RPC framing (OCPP-J 1.6 §4; reference devices.md §3).
//!
//! Contract:
//! - [`Frame::parse`] turns one WebSocket text message into a CALL
//!   `[2,id,action,{..}]`, CALLRESULT `[3,id,{..}]` or CALLERROR
//!   `[4,id,code,description,{..}]`, and is total: anything else is a
//!   [`BadFrame`] that says which [`ErrorCode`] the peer gets and, when the
//!   unique id could be read, to which message ([`BadFrame::reply`] builds
//!   the CALLERROR). A frame whose id cannot be read gets no reply (the
//!   spec has nothing to answer it with); the caller logs and drops it.
//! - [`Frame::encode`] is the inverse; `parse(encode(f)) == f`.
//! - [`decode`] reads a CALL's payload into a message type of [`messages`]
//!   and classifies serde's complaint into the 1.6 error codes: a missing
//!   field is an OccurenceConstraintViolation, a value of the wrong type a
//!   TypeConstraintViolation, a value outside an enumeration a
//!   PropertyConstraintViolation, anything else a FormationViolation.
//! - Error-code names use the 1.6 spellings (`FormationViolation`,
//!   `OccurenceConstraintViolation`).

pub mod link;
pub mod messages;
pub mod queue;
pub mod rpc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Longest unique id OCPP-J allows (36 characters).
pub const MAX_ID_LEN: usize = 36;
/// The WebSocket subprotocol of OCPP 1.6J.
pub const SUBPROTOCOL: &str = "ocpp1.6";

/// OCPP 1.6 CALLERROR codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotImplemented,
    NotSupported,
    InternalError,
    ProtocolError,
    SecurityError,
    FormationViolation,
    PropertyConstraintViolation,
    OccurenceConstraintViolation,
    TypeConstraintViolation,
    GenericError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::NotImplemented,
        ErrorCode::NotSupported,
        ErrorCode::InternalError,
        ErrorCode::ProtocolError,
        ErrorCode::SecurityError,
        ErrorCode::FormationViolation,
        ErrorCode::PropertyConstraintViolation,
        ErrorCode::OccurenceConstraintViolation,
        ErrorCode::TypeConstraintViolation,
        ErrorCode::GenericError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotImplemented => "NotImplemented",
            ErrorCode::NotSupported => "NotSupported",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::ProtocolError => "ProtocolError",
            ErrorCode::SecurityError => "SecurityError",
            ErrorCode::FormationViolation => "FormationViolation",
            ErrorCode::PropertyConstraintViolation => "PropertyConstraintViolation",
            ErrorCode::OccurenceConstraintViolation => "OccurenceConstraintViolation",
            ErrorCode::TypeConstraintViolation => "TypeConstraintViolation",
            ErrorCode::GenericError => "GenericError",
        }
    }

    /// The code of a name (unknown names read as GenericError).
    pub fn parse(s: &str) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or(ErrorCode::GenericError)
    }
}

/// One OCPP-J message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call {
        id: String,
        action: String,
        payload: Value,
    },
    CallResult {
        id: String,
        payload: Value,
    },
    CallError {
        id: String,
        code: ErrorCode,
        description: String,
        details: Value,
    },
}

/// A message that is not a valid OCPP-J frame.
#[derive(Debug, Clone, PartialEq)]
pub struct BadFrame {
    /// The unique id, when it could be read (then a CALLERROR is due).
    pub id: Option<String>,
    pub code: ErrorCode,
    pub description: String,
}

impl BadFrame {
    /// The CALLERROR answering this frame, if it had a readable id.
    pub fn reply(&self) -> Option<Frame> {
        self.id
            .as_ref()
            .map(|id| Frame::error(id, self.code, &self.description))
    }
}

impl Frame {
    /// A CALL.
    pub fn call(id: impl Into<String>, action: &str, payload: impl Serialize) -> Frame {
        Frame::Call {
            id: id.into(),
            action: action.to_string(),
            payload: serde_json::to_value(payload).unwrap_or(Value::Null),
        }
    }

    /// A CALLRESULT.
    pub fn result(id: impl Into<String>, payload: impl Serialize) -> Frame {
        Frame::CallResult {
            id: id.into(),
            payload: serde_json::to_value(payload).unwrap_or(Value::Null),
        }
    }

    /// A CALLERROR with empty details.
    pub fn error(id: impl Into<String>, code: ErrorCode, description: &str) -> Frame {
        Frame::CallError {
            id: id.into(),
            code,
            description: description.to_string(),
            details: json!({}),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Frame::Call { id, .. } | Frame::CallResult { id, .. } | Frame::CallError { id, .. } => {
                id
            }
        }
    }

    /// The JSON text of the frame.
    pub fn encode(&self) -> String {
        let v = match self {
            Frame::Call {
                id,
                action,
                payload,
            } => json!([2, id, action, payload]),
            Frame::CallResult { id, payload } => json!([3, id, payload]),
            Frame::CallError {
                id,
                code,
                description,
                details,
            } => json!([4, id, code.as_str(), description, details]),
        };
        v.to_string()
    }

    /// Reads one text message (see the module contract).
    pub fn parse(text: &str) -> Result<Frame, BadFrame> {
        let bad = |id: Option<String>, code, d: String| BadFrame {
            id,
            code,
            description: d,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| {
            bad(
                None,
                ErrorCode::FormationViolation,
                format!("not JSON: {e}"),
            )
        })?;
        let Value::Array(a) = v else {
            return Err(bad(
                None,
                ErrorCode::FormationViolation,
                "an OCPP-J message is a JSON array".into(),
            ));
        };
        let id = match a.get(1) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Some(s.clone()),
            _ => None,
        };
        let Some(kind) = a.first().and_then(Value::as_u64) else {
            return Err(bad(
                id,
                ErrorCode::FormationViolation,
                "the first element must be the message type 2, 3 or 4".into(),
            ));
        };
        let Some(id) = id else {
            return Err(bad(
                None,
                ErrorCode::FormationViolation,
                format!("the unique id must be a string of 1 to {MAX_ID_LEN} characters"),
            ));
        };
        let object = |x: Option<&Value>| matches!(x, Some(Value::Object(_)));
        match kind {
            2 => {
                let action = match a.get(2) {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    _ => {
                        return Err(bad(
                            Some(id),
                            ErrorCode::FormationViolation,
                            "a CALL's third element is the action name".into(),
                        ));
                    }
                };
                if a.len() != 4 || !object(a.get(3)) {
                    return Err(bad(
                        Some(id),
                        ErrorCode::FormationViolation,
                        "a CALL is [2, id, action, {payload}]".into(),
                    ));
                }
                Ok(Frame::Call {
                    id,
                    action,
                    payload: a[3].clone(),
                })
            }
            3 => {
                if a.len() != 3 || !object(a.get(2)) {
                    return Err(bad(
                        Some(id),
                        ErrorCode::FormationViolation,
                        "a CALLRESULT is [3, id, {payload}]".into(),
                    ));
                }
                Ok(Frame::CallResult {
                    id,
                    payload: a[2].clone(),
                })
            }
            4 => {
                let (Some(Value::String(code)), Some(Value::String(description))) =
                    (a.get(2), a.get(3))
                else {
                    return Err(bad(
                        Some(id),
                        ErrorCode::FormationViolation,
                        "a CALLERROR is [4, id, code, description, {details}]".into(),
                    ));
                };
                if a.len() != 5 || !object(a.get(4)) {
                    return Err(bad(
                        Some(id),
                        ErrorCode::FormationViolation,
                        "a CALLERROR is [4, id, code, description, {details}]".into(),
                    ));
                }
                Ok(Frame::CallError {
                    id,
                    code: ErrorCode::parse(code),
                    description: description.clone(),
                    details: a[4].clone(),
                })
            }
            n => Err(bad(
                Some(id),
                ErrorCode::ProtocolError,
                format!("message type {n} is not 2 (CALL), 3 (CALLRESULT) or 4 (CALLERROR)"),
            )),
        }
    }
}

/// A strategy for arbitrary JSON payloads shaped like OCPP ones (known
/// field names with values of any type, nested), for the models'
/// robustness proptests.
#[cfg(test)]
pub fn arb_payload() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop_oneof![
            Just("2026-01-01T00:00:00Z".to_string()),
            Just("Accepted".to_string()),
            Just("TxProfile".to_string()),
            Just("ChargePointMaxProfile".to_string()),
            Just("A".to_string()),
            Just("Relative".to_string()),
            "[a-zA-Z0-9]{0,8}",
        ]
        .prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("connectorId"),
        Just("idTag"),
        Just("transactionId"),
        Just("meterStart"),
        Just("meterStop"),
        Just("timestamp"),
        Just("csChargingProfiles"),
        Just("chargingProfileId"),
        Just("stackLevel"),
        Just("chargingProfilePurpose"),
        Just("chargingProfileKind"),
        Just("chargingSchedule"),
        Just("chargingRateUnit"),
        Just("chargingSchedulePeriod"),
        Just("startPeriod"),
        Just("limit"),
        Just("key"),
        Just("value"),
        Just("type"),
        Just("status"),
        Just("errorCode"),
        Just("meterValue"),
        Just("chargePointVendor"),
        Just("chargePointModel"),
        Just("requestedMessage"),
    ]
    .prop_map(String::from);
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload that does not fit its message type: the CALLERROR code and a
/// description naming the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadError {
    pub code: ErrorCode,
    pub description: String,
}

/// Reads a payload as message type `T` (see the module contract).
pub fn decode<T: DeserializeOwned>(payload: &Value) -> Result<T, PayloadError> {
    T::deserialize(payload).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.starts_with("missing field") {
            ErrorCode::OccurenceConstraintViolation
        } else if msg.starts_with("invalid type") {
            ErrorCode::TypeConstraintViolation
        } else if msg.starts_with("unknown variant")
            || msg.starts_with("invalid value")
            || msg.contains("out of range")
        {
            ErrorCode::PropertyConstraintViolation
        } else {
            ErrorCode::FormationViolation
        };
        PayloadError {
            code,
            description: msg,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let f = Frame::call("1", "Heartbeat", json!({}));
        assert_eq!(f.encode(), r#"[2,"1","Heartbeat",{}]"#);
        assert_eq!(Frame::parse(&f.encode()).unwrap(), f);
        let r = Frame::result("1", json!({"currentTime": "2026-01-01T00:00:00Z"}));
        assert_eq!(Frame::parse(&r.encode()).unwrap(), r);
        let e = Frame::error("9", ErrorCode::OccurenceConstraintViolation, "x");
        assert_eq!(
            e.encode(),
            r#"[4,"9","OccurenceConstraintViolation","x",{}]"#
        );
        assert_eq!(Frame::parse(&e.encode()).unwrap(), e);
    }

    #[test]
    fn bad_frames_get_the_right_code() {
        let p = |s: &str| Frame::parse(s).unwrap_err();
        assert_eq!(p("nope").id, None);
        assert_eq!(p("{}").code, ErrorCode::FormationViolation);
        let b = p(r#"[2,"7","Heartbeat"]"#);
        assert_eq!(b.id.as_deref(), Some("7"));
        assert_eq!(b.code, ErrorCode::FormationViolation);
        assert_eq!(p(r#"[5,"7",{}]"#).code, ErrorCode::ProtocolError);
        assert_eq!(p(r#"[2,7,"Heartbeat",{}]"#).id, None);
        let long = format!(r#"[2,"{}","Heartbeat",{{}}]"#, "x".repeat(37));
        assert_eq!(p(&long).id, None);
        let reply = p(r#"[2,"7","Heartbeat",[]]"#).reply().unwrap();
        assert!(matches!(reply, Frame::CallError { ref id, .. } if id == "7"));
    }

    #[test]
    fn payload_errors_are_classified() {
        use messages::StartTransactionReq;
        let missing = decode::<StartTransactionReq>(&json!({"connectorId": 1})).unwrap_err();
        assert_eq!(missing.code, ErrorCode::OccurenceConstraintViolation);
        let typed = decode::<StartTransactionReq>(&json!({
            "connectorId": "one", "idTag": "A", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"
        }))
        .unwrap_err();
        assert_eq!(typed.code, ErrorCode::TypeConstraintViolation);
        let prop = decode::<messages::StatusNotificationReq>(&json!({
            "connectorId": 1, "errorCode": "NoError", "status": "Flying"
        }))
        .unwrap_err();
        assert_eq!(prop.code, ErrorCode::PropertyConstraintViolation);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = Frame::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_json_arrays(
            kind in 0u64..7,
            id in proptest::option::of("[a-z0-9]{0,40}"),
            action in proptest::option::of("[A-Za-z]{0,20}"),
            extra in 0usize..4,
        ) {
            let mut a = vec![json!(kind)];
            if let Some(id) = id { a.push(json!(id)); }
            if let Some(ac) = action { a.push(json!(ac)); }
            for _ in 0..extra { a.push(json!({})); }
            let text = Value::Array(a).to_string();
            if let Err(b) = Frame::parse(&text)
                && let Some(r) = b.reply()
            {
                prop_assert!(Frame::parse(&r.encode()).is_ok());
            }
        }

        #[test]
        fn round_trip(id in "[a-zA-Z0-9-]{1,36}", action in "[A-Za-z]{1,30}", n in any::<i64>(), s in ".{0,30}") {
            for f in [
                Frame::call(id.clone(), &action, json!({"n": n, "s": s})),
                Frame::result(id.clone(), json!({"s": s})),
                Frame::error(id.clone(), ErrorCode::ALL[(n.unsigned_abs() % 10) as usize], &s),
            ] {
                prop_assert_eq!(Frame::parse(&f.encode()).unwrap(), f);
            }
        }

        #[test]
        fn decode_never_panics(v in proptest::arbitrary::any::<(u8, i32, String)>()) {
            let payload = json!({"connectorId": v.0, "meterStart": v.1, "idTag": v.2, "timestamp": v.2});
            let _ = decode::<messages::StartTransactionReq>(&payload);
            let _ = decode::<messages::MeterValuesReq>(&payload);
            let _ = decode::<messages::SetChargingProfileReq>(&payload);
        }
    }
}
