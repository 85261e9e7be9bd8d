//! The Data Logger's MQTT 3.1.1 codec (what a broker sends back): any
//! bytes decode without panic; a decoded packet re-encodes to one that
//! decodes to it.
#![no_main]
use fieldtwin_models::datalogger::mqtt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((p, used))) = mqtt::decode(&data[at..]) {
        assert!(used > 0 && used <= data.len() - at);
        // Lengths may be encoded non-minimally: compare re-decoded packets.
        let again = mqtt::decode(&p.encode()).expect("an encoded packet decodes");
        assert_eq!(
            format!("{:?}", again.map(|(q, _)| q)),
            format!("{:?}", Some(p))
        );
        at += used;
    }
});
