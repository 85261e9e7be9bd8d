//! The Data Logger's digital outputs (seed 004 "discrete (... digital
//! I/O)"; docs/datalogger.md "Digital outputs"; the rest is [NF]).
//!
//! Contract:
//! - [`Outputs`] is plain state built from the site file's outputs: each
//!   is `manual` (set by a user: the USB console's `output NAME on|off`,
//!   the BLE app's `output NAME on|off` request) or `alarm` (follows one
//!   input: on when a sample's value rises above `above` or the sample is a
//!   fault reading, fail-safe; off when a sound sample falls below
//!   `below`; in between it holds, the hysteresis band).
//! - A user cannot set an alarm output ([`Outputs::set`] refuses, naming
//!   its input); output names match without regard to case.
//! - Persistence: [`Outputs::saved`] is what the logger keeps in NV memory
//!   (the manual outputs' settings, by name); [`Outputs::new`] restores
//!   them at boot. Alarm outputs start off at boot and take the state of
//!   their input's first sample. While the logger is unpowered every
//!   output is de-energised (off), which [`Outputs::json`] reports.

use std::collections::BTreeMap;

use fieldtwin_emulator::site::{InputConfig, OutputConfig, OutputMode};
use serde_json::{Value, json};

use super::sensors::Status;

/// One output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub mode: OutputMode,
    /// Alarm outputs: (input index, input name, above, below).
    pub alarm: Option<(u8, String, f64, f64)>,
    pub on: bool,
}

/// The logger's outputs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outputs {
    pub list: Vec<Output>,
}

/// A change of an output, for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub on: bool,
}

fn word(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

impl Outputs {
    /// The outputs of `cfg` (validated by the site file), manual ones as
    /// `saved` (by name) left them.
    pub fn new(
        cfg: &[OutputConfig],
        inputs: &[InputConfig],
        saved: &BTreeMap<String, bool>,
    ) -> Self {
        let list = cfg
            .iter()
            .map(|o| {
                let alarm = (o.mode == OutputMode::Alarm)
                    .then(|| {
                        let name = o.input.as_deref()?;
                        let i = inputs.iter().position(|x| x.name == name)?;
                        let above = o.above.or(inputs[i].threshold)?;
                        Some((i as u8, name.to_string(), above, o.below.unwrap_or(above)))
                    })
                    .flatten();
                Output {
                    name: o.name.clone(),
                    mode: o.mode,
                    alarm,
                    on: o.mode == OutputMode::Manual
                        && saved.get(&o.name).copied().unwrap_or(false),
                }
            })
            .collect();
        Self { list }
    }

    /// A sample of input `input`: the alarm outputs on it follow. Returns
    /// the outputs that changed.
    pub fn sample(&mut self, input: u8, status: Status, value: f64) -> Vec<Change> {
        let fault = matches!(
            status,
            Status::FaultLow | Status::FaultHigh | Status::NoResponse | Status::Undefined
        );
        let mut changes = Vec::new();
        for o in &mut self.list {
            let Some((i, _, above, below)) = &o.alarm else {
                continue;
            };
            if *i != input {
                continue;
            }
            let on = if fault || value > *above {
                true
            } else if value < *below {
                false
            } else {
                o.on
            };
            if on != o.on {
                o.on = on;
                changes.push(Change {
                    name: o.name.clone(),
                    on,
                });
            }
        }
        changes
    }

    /// A user sets output `name`; returns whether it changed. Alarm outputs
    /// and unknown names are refused with a message.
    pub fn set(&mut self, name: &str, on: bool) -> Result<bool, String> {
        let names = self
            .list
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(o) = self
            .list
            .iter_mut()
            .find(|o| o.name.eq_ignore_ascii_case(name))
        else {
            return Err(format!("no output {name:?}; the logger has: {names}"));
        };
        if let Some((_, input, ..)) = &o.alarm {
            return Err(format!(
                "output {} is an alarm output driven by input {input}; it cannot be set by hand",
                o.name
            ));
        }
        let changed = o.on != on;
        o.on = on;
        Ok(changed)
    }

    /// The manual outputs' settings, by name (kept in NV memory).
    pub fn saved(&self) -> BTreeMap<String, bool> {
        self.list
            .iter()
            .filter(|o| o.mode == OutputMode::Manual)
            .map(|o| (o.name.clone(), o.on))
            .collect()
    }

    /// One console line: `DO1=off(manual) DO2=on(alarm level>4)`.
    pub fn line(&self) -> String {
        self.list
            .iter()
            .map(|o| match &o.alarm {
                Some((_, input, above, below)) => {
                    format!(
                        "{}={}(alarm {input}>{above} off<{below})",
                        o.name,
                        word(o.on)
                    )
                }
                None => format!("{}={}(manual)", o.name, word(o.on)),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The outputs for the control API and the BLE app (`powered`: off
    /// when the logger is not).
    pub fn json(&self, powered: bool) -> Value {
        Value::Array(
            self.list
                .iter()
                .map(|o| {
                    let mut v = json!({
                        "name": o.name,
                        "mode": o.mode,
                        "on": o.on && powered,
                    });
                    if let Some((_, input, above, below)) = &o.alarm {
                        v["input"] = json!(input);
                        v["above"] = json!(above);
                        v["below"] = json!(below);
                    }
                    v
                })
                .collect(),
        )
    }
}

/// Parses `on`/`off` (any case; also `1`/`0`).
pub fn parse_state(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "1" => Some(true),
        "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldtwin_emulator::site::{InputKind, Quantity, default_inputs, default_outputs};

    fn config() -> (Vec<OutputConfig>, Vec<InputConfig>) {
        let mut inputs = default_inputs();
        inputs[0].threshold = Some(4.0); // level
        let mut outs = default_outputs();
        outs.push(OutputConfig {
            name: "alarm".into(),
            mode: OutputMode::Alarm,
            input: Some("level".into()),
            above: None,
            below: Some(3.5),
        });
        outs.push(OutputConfig {
            name: "door-open".into(),
            mode: OutputMode::Alarm,
            input: Some("door".into()),
            above: Some(0.5),
            below: None,
        });
        assert_eq!(inputs[3].kind, InputKind::Digital);
        assert_eq!(inputs[3].quantity, Quantity::Contact);
        (outs, inputs)
    }

    #[test]
    fn alarm_follows_its_input_with_hysteresis_and_fails_safe() {
        let (outs, inputs) = config();
        let mut o = Outputs::new(&outs, &inputs, &BTreeMap::new());
        assert!(o.list.iter().all(|x| !x.on));
        assert!(o.sample(0, Status::Ok, 3.9).is_empty());
        let c = o.sample(0, Status::Ok, 4.1);
        assert_eq!(
            c,
            vec![Change {
                name: "alarm".into(),
                on: true
            }]
        );
        // Inside the band (3.5..4.0) it holds; below 3.5 it clears.
        assert!(o.sample(0, Status::Ok, 3.7).is_empty());
        assert!(o.list[2].on);
        assert_eq!(o.sample(0, Status::Ok, 3.4).len(), 1);
        assert!(!o.list[2].on);
        // A broken wire (NE43 fault low) raises it whatever the value.
        assert_eq!(o.sample(0, Status::FaultLow, 0.0).len(), 1);
        assert!(o.list[2].on);
        // Another input's samples do not touch it; the door's alarm has
        // no hysteresis.
        assert_eq!(o.sample(3, Status::Ok, 1.0)[0].name, "door-open");
        assert_eq!(o.sample(3, Status::Ok, 0.0).len(), 1);
        assert!(o.list[2].on);
    }

    #[test]
    fn manual_outputs_are_set_by_name_and_restored() {
        let (outs, inputs) = config();
        let mut o = Outputs::new(&outs, &inputs, &BTreeMap::new());
        assert_eq!(o.set("do2", true), Ok(true));
        assert_eq!(o.set("DO2", true), Ok(false));
        let e = o.set("alarm", true).unwrap_err();
        assert!(e.contains("driven by input level"), "{e}");
        let e = o.set("DO9", true).unwrap_err();
        assert!(e.contains("DO1, DO2, alarm, door-open"), "{e}");
        let saved = o.saved();
        assert_eq!(
            saved,
            BTreeMap::from([("DO1".to_string(), false), ("DO2".to_string(), true)])
        );
        // After a power cycle the manual setting is back, the alarm is not.
        o.sample(0, Status::Ok, 5.0);
        let again = Outputs::new(&outs, &inputs, &saved);
        assert!(again.list[1].on && !again.list[2].on);
        assert_eq!(
            again.line(),
            "DO1=off(manual) DO2=on(manual) alarm=off(alarm level>4 off<3.5) \
             door-open=off(alarm door>0.5 off<0.5)"
        );
        let j = again.json(true);
        assert_eq!(j[1]["on"], true);
        assert_eq!(j[2]["input"], "level");
        assert_eq!(again.json(false)[1]["on"], false, "unpowered: de-energised");
    }

    #[test]
    fn states_parse() {
        assert_eq!(parse_state("ON"), Some(true));
        assert_eq!(parse_state("0"), Some(false));
        assert_eq!(parse_state("maybe"), None);
    }
}
