//! DPWS discovery (reference/devices.md §5; WS-Discovery 2005/04 draft as
//! Windows uses it, SOAP 1.2, WS-Addressing 2004/08, Devices Profile 2006/02).
//!
//! Contract: pure message codec, no I/O. [`parse`] reads the action,
//! message id, probe types (as qualified names, their prefixes resolved
//! against the envelope's namespace declarations) and resolve address of an
//! incoming SOAP envelope (never panics on bad input); the builders write
//! Hello, Bye, ProbeMatches, ResolveMatches and the WS-Transfer GetResponse
//! with the device metadata (ThisDevice, ThisModel with the presentation
//! URL).
//!
//! The device types are `wsdp:Device` and the two Schneider types of
//! devices.md §1.7: `{http://www.schneider-electric.com}GatewayServer` and
//! `{http://www.schneider-electric.com/CyberSecurity}EcoStruxurePanelServer`.
//! [`matches`] selects the device for a Probe with no types or with only
//! these types (namespace and local name both compared).

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
    r#"xmlns:se="http://www.schneider-electric.com" "#,
    r#"xmlns:sec="http://www.schneider-electric.com/CyberSecurity""#
);
const DISCOVERY: &str = "http://schemas.xmlsoap.org/ws/2005/04/discovery";
const TO_MULTICAST: &str = "urn:schemas-xmlsoap-org:ws:2005:04:discovery";
const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";
/// Devices Profile namespace (`wsdp:Device`).
pub const DEVPROF: &str = "http://schemas.xmlsoap.org/ws/2006/02/devprof";
/// Namespace of Schneider's `GatewayServer` type (devices.md §1.7).
pub const SCHNEIDER: &str = "http://www.schneider-electric.com";
/// Namespace of the Panel Server's `EcoStruxurePanelServer` type.
pub const SCHNEIDER_CYBERSECURITY: &str = "http://www.schneider-electric.com/CyberSecurity";
/// Types the device announces, as written in its messages (prefixes
/// declared on every envelope).
pub const TYPES: &str = "wsdp:Device se:GatewayServer sec:EcoStruxurePanelServer";
/// The same types as (namespace, local name).
pub const DEVICE_TYPES: [(&str, &str); 3] = [
    (DEVPROF, "Device"),
    (SCHNEIDER, "GatewayServer"),
    (SCHNEIDER_CYBERSECURITY, "EcoStruxurePanelServer"),
];

/// A qualified name from a Probe's Types list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QName {
    /// The namespace its prefix is bound to; `None` when the envelope does
    /// not declare the prefix (then only the local name can be compared).
    pub namespace: Option<String>,
    pub local: String,
}

impl QName {
    /// `{namespace}local`, as the probe meant it.
    pub fn new(namespace: &str, local: &str) -> Self {
        Self {
            namespace: Some(namespace.to_string()),
            local: local.to_string(),
        }
    }
}

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
    Probe {
        message_id: String,
        types: Vec<QName>,
    },
    Resolve {
        message_id: String,
        address: String,
    },
    Get {
        message_id: String,
    },
    Other,
}

/// Text of the first element whose local name is `local` (any prefix).
fn element<'a>(xml: &'a str, local: &str) -> Option<&'a str> {
    element_at(xml, local).map(|(_, text)| text)
}

/// The first element whose local name is `local`: where its content starts,
/// and its (trimmed) text.
fn element_at<'a>(xml: &'a str, local: &str) -> Option<(usize, &'a str)> {
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
                return Some((start + gt, ""));
            }
            let body = &rest[gt + 1..];
            let close = body.find("</")?;
            return Some((start + gt + 1, body[..close].trim()));
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
        let types = match element_at(xml, "Types") {
            Some((at, text)) => text
                .split_whitespace()
                .map(|t| qname(&xml[..at], t))
                .collect(),
            None => Vec::new(),
        };
        Message::Probe { message_id, types }
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

/// Resolves `prefix:local` (or `local`) against the namespace declarations
/// written before the Types element (`before`): the nearest one wins, as
/// declarations on the element or its nearest ancestor come last.
fn qname(before: &str, name: &str) -> QName {
    let (prefix, local) = match name.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, name),
    };
    let attr = match prefix {
        Some(p) => format!("xmlns:{p}="),
        None => "xmlns=".to_string(),
    };
    let namespace = before.rfind(&attr).and_then(|i| {
        let rest = before.get(i + attr.len()..)?;
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let value = &rest[1..];
        Some(value[..value.find(quote)?].to_string())
    });
    QName {
        namespace,
        local: local.to_string(),
    }
}

/// Whether a Probe's types select this device: no types, or every probed
/// type is one of [`DEVICE_TYPES`] (same namespace and local name; a type
/// whose prefix the probe never declared is compared by local name).
pub fn matches(types: &[QName]) -> bool {
    types.iter().all(|t| {
        DEVICE_TYPES
            .iter()
            .any(|(ns, local)| t.local == *local && t.namespace.as_deref().is_none_or(|n| n == *ns))
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
        let device = vec![QName::new(DEVPROF, "Device")];
        assert_eq!(
            m,
            Message::Probe {
                message_id: "urn:uuid:abc".into(),
                types: device.clone()
            }
        );
        assert!(matches(&device));
        assert!(matches(&[]));
        assert!(!matches(&[QName::new("http://example.com/x", "Printer")]));
        let r = probe_matches(&id(), "urn:uuid:m", "urn:uuid:abc", (1, 1));
        assert!(r.contains("<wsa:RelatesTo>urn:uuid:abc</wsa:RelatesTo>"));
        assert!(r.contains("http://10.77.0.10:5357/1234"));
        let g = get_response(&id(), "urn:uuid:g", "urn:uuid:x");
        assert!(g.contains("<wsdp:PresentationUrl>https://10.77.0.10/</wsdp:PresentationUrl>"));
    }

    fn probe_for(decls: &str, types: &str) -> Vec<QName> {
        let x = format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" {decls}><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action><a:MessageID>m</a:MessageID></s:Header><s:Body><d:Probe xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><d:Types>{types}</d:Types></d:Probe></s:Body></s:Envelope>"#
        );
        match parse(&x) {
            Message::Probe { types, .. } => types,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn schneider_types_match_with_their_namespaces_only() {
        let t = probe_for(
            r#"xmlns:gw="http://www.schneider-electric.com""#,
            "gw:GatewayServer",
        );
        assert_eq!(t, vec![QName::new(SCHNEIDER, "GatewayServer")]);
        assert!(matches(&t));
        let t = probe_for(
            r#"xmlns:c='http://www.schneider-electric.com/CyberSecurity' xmlns:w="http://schemas.xmlsoap.org/ws/2006/02/devprof""#,
            "w:Device  c:EcoStruxurePanelServer",
        );
        assert!(matches(&t), "{t:?}");
        // The right local name in another namespace is another type.
        let t = probe_for(r#"xmlns:gw="http://example.com/other""#, "gw:GatewayServer");
        assert!(!matches(&t));
        // A type the device does not have, even next to one it has.
        let t = probe_for(
            r#"xmlns:w="http://schemas.xmlsoap.org/ws/2006/02/devprof" xmlns:p="http://schemas.microsoft.com/windows/pub/2005/07""#,
            "w:Device p:Computer",
        );
        assert!(!matches(&t));
        // An undeclared prefix: compared by local name.
        let t = probe_for("", "x:EcoStruxurePanelServer");
        assert_eq!(t[0].namespace, None);
        assert!(matches(&t));
        assert!(!matches(&probe_for("", "x:Printer")));
        // Every announced type carries a declared prefix.
        let h = hello(&id(), "urn:uuid:h", (1, 1));
        for (ns, local) in DEVICE_TYPES {
            assert!(h.contains(local) && h.contains(&format!("\"{ns}\"")), "{h}");
        }
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
