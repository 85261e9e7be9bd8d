//! The Panel Server's rules for the shared security surface
//! ([`crate::security`]), from DOCA0211: account names, and its [`POLICY`]
//! (a [`crate::security::Policy`] value: accounts, password rules, lockout
//! numbers, session limits); the TLS versions from the site file.

use chrono::Duration;

use crate::security::password::{Class, Composition, Rule, Rules};
use crate::security::{Config, Policy, accounts, lockout, session, tls};

/// The web user: the default administrator account named in DOCA0172
/// (devices.md §1.7).
pub const WEB_USER: &str = "SecurityAdmin";

/// The support account of DOCA0211 ([NF]: disabled until the administrator
/// gives it a password on the Users page).
pub const SUPPORT_USER: &str = "SupportUser";

/// The Panel Server's rules (DOCA0211).
pub const POLICY: Policy = Policy {
    accounts: accounts::Names {
        admin: WEB_USER,
        support: Some(SUPPORT_USER),
    },
    // 10 consecutive failed logins lock the webpages for 10 minutes; after
    // that lock, 5 more failures lock them for 60 minutes (and every
    // further 5 failures lock them for 60 minutes again [NF]).
    lockout: lockout::Policy {
        first_threshold: 10,
        next_threshold: 5,
        first_lock: Duration::minutes(10),
        next_lock: Duration::minutes(60),
    },
    // Idle timeout 15 minutes ([NF]); at most 32 sessions.
    session: session::Policy {
        idle: Duration::minutes(15),
        max: 32,
    },
    // "Password Management": web users 8-50 characters, three of four
    // classes; Wi-Fi access point 8-32 with uppercase, lowercase and digit;
    // backup 6-32 with uppercase, lowercase and special character ("Backup
    // Function").
    rules: Rules {
        user: Rule {
            min: 8,
            max: 50,
            composition: Composition::ThreeOfFour,
        },
        wifi_ap: Rule {
            min: 8,
            max: 32,
            composition: Composition::All(&[Class::Upper, Class::Lower, Class::Digit]),
        },
        backup: Rule {
            min: 6,
            max: 32,
            composition: Composition::All(&[Class::Upper, Class::Lower, Class::Special]),
        },
    },
};

/// The security configuration of one Panel Server: PBKDF2 `iterations` and
/// TLS 1.3 come from the site file.
pub fn config(iterations: u32, tls13: bool) -> Config {
    POLICY.config(
        iterations,
        if tls13 {
            tls::Versions::Tls12And13
        } else {
            tls::Versions::Tls12
        },
    )
}
