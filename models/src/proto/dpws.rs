//! DPWS discovery (reference/devices.md §5; WS-Discovery 2005/04 draft as
//! Windows uses it, SOAP 1.2, WS-Addressing 2004/08, Devices Profile 2006/02).
//!
//! Contract: pure message codec, no I/O. [`parse`] reads the action,
//! message id, probe types and resolve address of an incoming SOAP envelope
//! (never panics on bad input); the builders write Hello, Bye,
//! ProbeMatches, ResolveMatches and the WS-Transfer GetResponse with the
//! device metadata (ThisDevice, ThisModel with the presentation URL).

pub const PORT: u16 = 3702;
pub const MULTICAST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 255, 250);
/// Default metadata port (configurable).
pub const METADATA_PORT: u16 = 5357;
pub const MAX_MESSAGE: usize = 32_767;

const NS: &str = concat!(
    r#"xmlns:soap="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" "#,
    r#"xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery" "#,
    r#"xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof" "#,
    r#"xmlns:wsx="http://schemas.xmlsoap.org/ws/2004/09/mex" "#,
    r#"xmlns:pub="http://schemas.microsoft.com/windows/pub/2005/07""#
);
const DISCOVERY: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
const TO_MULTICAST: &str = "urn:schemas-xmlsoap-org:ws:2005:04:discovery";
const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// Types the device announces.
pub const TYPES: &str = "wsdp:Device pub:Computer";

/// What the device tells about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `urn:uuid:...` endpoint reference.
    pub endpoint: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub friendly_name: String,
    pub presentation_url: String,
    /// `http://ip:port/uuid`.
    pub xaddrs: String,
    pub metadata_version: u32,
}

/// A parsed incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Probe { message_id: String, types: String },
    Resolve { message_id: String, address: String },
    Get { message_id: String },
    Other,
}

/// Text of the first element whose local name is `local` (any prefix).
fn element<'a>(xml: &'a str, local: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = xml.get(from..)?.find('<') {
        let start = from + i + 1;
        let rest = xml.get(start..)?;
        let end_name =
            rest.find(|c: char| c == '>' || c == ' ' || c == '/' || c.is_whitespace())?;
        let name = &rest[..end_name];
        let lname = name.rsplit(':').next().unwrap_or(name);
        if lname == local && !name.starts_with('/') {
            let gt = rest.find('>')?;
            if rest[..gt].ends_with('/') {
                return Some("");
            }
            let body = &rest[gt + 1..];
            let close = body.find("</")?;
            return Some(body[..close].trim());
        }
        from = start;
    }
    None
}

/// Parses an incoming SOAP envelope.
pub fn parse(xml: &str) -> Message {
    let action = element(xml, "Action").unwrap_or_default();
    let message_id = element(xml, "MessageID").unwrap_or_default().to_string();
    if action.ends_with("/discovery/Probe") {
        Message::Probe {
            message_id,
            types: element(xml, "Types").unwrap_or_default().to_string(),
        }
    } else if action.ends_with("/discovery/Resolve") {
        let epr = xml
            .find("EndpointReference")
            .and_then(|i| element(&xml[i..], "Address"))
            .unwrap_or_default();
        Message::Resolve {
            message_id,
            address: epr.to_string(),
        }
    } else if action == "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get" {
        Message::Get { message_id }
    } else {
        Message::Other
    }
}

/// Whether a Probe's types select this device: no types, or every probed
/// type's local name is one the device has.
pub fn matches(types: &str) -> bool {
    types.split_whitespace().all(|t| {
        let local = t.rsplit(':').next().unwrap_or(t);
        local == "Device" || local == "Computer"
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn envelope(
    action: &str,
    to: &str,
    message_id: &str,
    relates_to: Option<&str>,
    seq: Option<(u64, u64)>,
    body: &str,
) -> String {
    let relates = relates_to
        .map(|r| format!("<wsa:RelatesTo>{}</wsa:RelatesTo>", escape(r)))
        .unwrap_or_default();
    let app = seq
        .map(|(inst, n)| format!(r#"<wsd:AppSequence InstanceId="{inst}" MessageNumber="{n}"/>"#))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope {NS}><soap:Header><wsa:To>{to}</wsa:To><wsa:Action>{action}</wsa:Action><wsa:MessageID>{message_id}</wsa:MessageID>{relates}{app}</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

fn epr_block(id: &Identity, with_xaddrs: bool) -> String {
    let x = if with_xaddrs {
        format!("<wsd:XAddrs>{}</wsd:XAddrs>", escape(&id.xaddrs))
    } else {
        String::new()
    };
    format!(
        "<wsa:EndpointReference><wsa:Address>{}</wsa:Address></wsa:EndpointReference><wsd:Types>{TYPES}</wsd:Types>{x}<wsd:MetadataVersion>{}</wsd:MetadataVersion>",
        escape(&id.endpoint),
        id.metadata_version
    )
}

pub fn hello(id: &Identity, message_id: &str, seq: (u64, u64)) -> String {
    envelope(
        &format!("{DISCOVERY}/Hello"),
        TO_MULTICAST,
        message_id,
        None,
        Some(seq),
        &format!("<wsd:Hello>{}</wsd:Hello>", epr_block(id, true)),
    )
}

pub fn bye(id: &Identity, message_id: &str, seq: (u64, u64)) -> String {
    envelope(
        &format!("{DISCOVERY}/Bye"),
        TO_MULTICAST,
        message_id,
        None,
        Some(seq),
        &format!(
            "<wsd:Bye><wsa:EndpointReference><wsa:Address>{}</wsa:Address></wsa:EndpointReference></wsd:Bye>",
            escape(&id.endpoint)
        ),
    )
}

pub fn probe_matches(id: &Identity, message_id: &str, relates_to: &str, seq: (u64, u64)) -> String {
    envelope(
        &format!("{DISCOVERY}/ProbeMatches"),
        ANONYMOUS,
        message_id,
        Some(relates_to),
        Some(seq),
        &format!(
            "<wsd:ProbeMatches><wsd:ProbeMatch>{}</wsd:ProbeMatch></wsd:ProbeMatches>",
            epr_block(id, true)
        ),
    )
}

pub fn resolve_matches(
    id: &Identity,
    message_id: &str,
    relates_to: &str,
    seq: (u64, u64),
) -> String {
    envelope(
        &format!("{DISCOVERY}/ResolveMatches"),
        ANONYMOUS,
        message_id,
        Some(relates_to),
        Some(seq),
        &format!(
            "<wsd:ResolveMatches><wsd:ResolveMatch>{}</wsd:ResolveMatch></wsd:ResolveMatches>",
            epr_block(id, true)
        ),
    )
}

/// WS-Transfer GetResponse with the device metadata.
pub fn get_response(id: &Identity, message_id: &str, relates_to: &str) -> String {
    let e = |s: &str| escape(s);
    let body = format!(
        concat!(
            r#"<wsx:Metadata>"#,
            r#"<wsx:MetadataSection Dialect="http://schemas.xmlsoap.org/ws/2006/02/devprof/ThisDevice"><wsdp:ThisDevice>"#,
            r#"<wsdp:FriendlyName>{}</wsdp:FriendlyName><wsdp:FirmwareVersion>{}</wsdp:FirmwareVersion><wsdp:SerialNumber>{}</wsdp:SerialNumber>"#,
            r#"</wsdp:ThisDevice></wsx:MetadataSection>"#,
            r#"<wsx:MetadataSection Dialect="http://schemas.xmlsoap.org/ws/2006/02/devprof/ThisModel"><wsdp:ThisModel>"#,
            r#"<wsdp:Manufacturer>{}</wsdp:Manufacturer><wsdp:ModelName>{}</wsdp:ModelName><wsdp:ModelNumber>{}</wsdp:ModelNumber><wsdp:PresentationUrl>{}</wsdp:PresentationUrl>"#,
            r#"</wsdp:ThisModel></wsx:MetadataSection>"#,
            r#"<wsx:MetadataSection Dialect="http://schemas.xmlsoap.org/ws/2006/02/devprof/Relationship"><wsdp:Relationship Type="http://schemas.xmlsoap.org/ws/2006/02/devprof/host"><wsdp:Host><wsa:EndpointReference><wsa:Address>{}</wsa:Address></wsa:EndpointReference><wsdp:Types>{}</wsdp:Types><wsdp:ServiceId>{}</wsdp:ServiceId></wsdp:Host></wsdp:Relationship></wsx:MetadataSection>"#,
            r#"</wsx:Metadata>"#
        ),
        e(&id.friendly_name),
        e(&id.firmware),
        e(&id.serial),
        e(&id.manufacturer),
        e(&id.model),
        e(&id.model),
        e(&id.presentation_url),
        e(&id.endpoint),
        TYPES,
        e(&id.endpoint)
    );
    envelope(
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse",
        ANONYMOUS,
        message_id,
        Some(relates_to),
        None,
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> Identity {
        Identity {
            endpoint: "urn:uuid:1234".into(),
            manufacturer: "Schneider Electric".into(),
            model: "PAS600".into(),
            serial: "NK1".into(),
            firmware: "002.002.000".into(),
            friendly_name: "ps1".into(),
            presentation_url: "https://10.77.0.10/".into(),
            xaddrs: "http://10.77.0.10:5357/1234".into(),
            metadata_version: 1,
        }
    }

    #[test]
    fn parses_a_probe_and_answers() {
        let probe = r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dp="http://schemas.xmlsoap.org/ws/2006/02/devprof"><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action><a:MessageID>urn:uuid:abc</a:MessageID><a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header><s:Body><d:Probe><d:Types>dp:Device</d:Types></d:Probe></s:Body></s:Envelope>"#;
        let m = parse(probe);
        assert_eq!(
            m,
            Message::Probe {
                message_id: "urn:uuid:abc".into(),
                types: "dp:Device".into()
            }
        );
        assert!(matches("dp:Device"));
        assert!(matches(""));
        assert!(!matches("x:Printer"));
        let r = probe_matches(&id(), "urn:uuid:m", "urn:uuid:abc", (1, 1));
        assert!(r.contains("<wsa:RelatesTo>urn:uuid:abc</wsa:RelatesTo>"));
        assert!(r.contains("http://10.77.0.10:5357/1234"));
        let g = get_response(&id(), "urn:uuid:g", "urn:uuid:x");
        assert!(g.contains("<wsdp:PresentationUrl>https://10.77.0.10/</wsdp:PresentationUrl>"));
    }

    #[test]
    fn parses_resolve() {
        let x = r#"<e><h><wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Resolve</wsa:Action><wsa:MessageID>m1</wsa:MessageID></h><b><wsd:Resolve><wsa:EndpointReference><wsa:Address>urn:uuid:1234</wsa:Address></wsa:EndpointReference></wsd:Resolve></b></e>"#;
        assert_eq!(
            parse(x),
            Message::Resolve {
                message_id: "m1".into(),
                address: "urn:uuid:1234".into()
            }
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = parse(&s);
        }
    }
}
