//! The EV Charging Expert's rules for the shared security surface
//! ([`crate::security`]): account names and default password, and its
//! [`POLICY`] (a [`crate::security::Policy`] value: accounts, password
//! rules, lockout, sessions); TLS 1.2 only. DOCA0349 gives none of the
//! numbers; every value here is [NF] and documented in docs/ev-charging.md
//! ("Web").

use chrono::Duration;

use crate::security::password::{Class, Composition, Rule, Rules};
use crate::security::{Config, Policy, accounts, lockout, session, tls};

/// The administrator account ([NF]).
pub const ADMIN_USER: &str = "admin";
/// The factory password of the administrator ([NF]); the first login must
/// replace it (DOCA0349 "Change default passwords at first step").
pub const DEFAULT_PASSWORD: &str = "admin";
/// The support account used for SSH (DOCA0349: SSH "restricted to Schneider
/// Electric support engineering teams"); disabled until the administrator
/// gives it a password on the Maintenance page ([NF]).
pub const SUPPORT_USER: &str = "support";

/// The EVCE's rules ([NF], all of them).
pub const POLICY: Policy = Policy {
    accounts: accounts::Names {
        admin: ADMIN_USER,
        support: Some(SUPPORT_USER),
    },
    // 5 consecutive failed logins lock the pages (and SSH) for 15 minutes;
    // after that lock, every 5 more failures lock them for 60 minutes.
    lockout: lockout::Policy {
        first_threshold: 5,
        next_threshold: 5,
        first_lock: Duration::minutes(15),
        next_lock: Duration::minutes(60),
    },
    // Idle timeout 15 minutes, at most 16 sessions.
    session: session::Policy {
        idle: Duration::minutes(15),
        max: 16,
    },
    // Web passwords: 8-64 characters, three of four classes. The EVCE has
    // no Wi-Fi access point and no backup file; those rules are unused.
    rules: Rules {
        user: Rule {
            min: 8,
            max: 64,
            composition: Composition::ThreeOfFour,
        },
        wifi_ap: Rule {
            min: 8,
            max: 64,
            composition: Composition::All(&[Class::Upper, Class::Lower, Class::Digit]),
        },
        backup: Rule {
            min: 8,
            max: 64,
            composition: Composition::ThreeOfFour,
        },
    },
};

/// The firmware family of signed EVCE images.
pub const FIRMWARE_FAMILY: &str = "EV Charging Expert";

/// The security configuration of one EVCE (`iterations` of PBKDF2 from the
/// site file; TLS 1.2 only, DOCA0349 "Supported Protocols").
pub fn config(iterations: u32) -> Config {
    POLICY.config(iterations, tls::Versions::Tls12)
}
