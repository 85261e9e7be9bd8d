//! A browser-like HTTPS session with a Panel Server's web pages for the
//! end-to-end tests: curl -k with a cookie jar, the CSRF token of a page,
//! form posts and the login form. The initial password is the one the
//! running site printed. [`Ps`] is a running site with such a session on
//! its Panel Server `ps1`.

use super::{RunningSite, curl, fast_site_text};

/// The web pages of the Panel Server at `ip`, as one browser sees them.
pub struct Web {
    pub ip: String,
    /// The SecurityAdmin password the site printed at start.
    pub password: String,
    jar: tempfile::NamedTempFile,
}

impl Web {
    /// A session with the Panel Server at `ip` of `run`, whose printed
    /// SecurityAdmin password is taken from the run's output.
    pub fn of(run: &RunningSite, ip: impl Into<String>) -> Self {
        let out = run.stdout.lock().unwrap().clone();
        let password = out
            .split("https: SecurityAdmin / ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no https login printed:\n{out}"))
            .to_string();
        Self {
            ip: ip.into(),
            password,
            jar: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.ip, path)
    }

    /// curl -k with the cookie jar; returns (status, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let jar = self.jar.path().to_str().unwrap();
        let mut a = vec!["-sk", "-b", jar, "-c", jar, "-w", "\n%{http_code}"];
        a.extend_from_slice(args);
        curl(&a)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[&self.url(path)])
    }

    /// The login form as `user`, following the redirect.
    pub fn login_as(&self, user: &str, pw: &str) -> (u16, String) {
        self.curl(&[
            "-L",
            "--data-urlencode",
            &format!("username={user}"),
            "--data-urlencode",
            &format!("password={pw}"),
            &self.url("/login"),
        ])
    }

    /// The CSRF token of a page (which must answer 200).
    pub fn csrf(&self, path: &str) -> String {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "{path}: {body}");
        body.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no csrf on {path}: {body}"))
            .to_string()
    }

    /// Posts a form of `page` (its CSRF token included) to `action`.
    pub fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let csrf = self.csrf(page);
        let pairs: Vec<String> = std::iter::once(format!("csrf={csrf}"))
            .chain(fields.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let mut args: Vec<&str> = Vec::new();
        for p in &pairs {
            args.extend(["--data-urlencode", p.as_str()]);
        }
        let url = self.url(action);
        args.push(&url);
        self.curl(&args)
    }

    /// Uploads the firmware image `img` with the Firmware update page's
    /// form: (status, body).
    pub fn upload_firmware(&self, img: &std::path::Path) -> (u16, String) {
        let csrf = self.csrf("/firmware");
        self.curl(&[
            "-F",
            &format!("csrf={csrf}"),
            "-F",
            &format!("image=@{}", img.display()),
            &self.url("/firmware"),
        ])
    }

    /// Downloads the backup file, encrypted with `password`, into `to`
    /// (the form's `csrf` token from the Backup page): the HTTP status.
    pub fn download_backup(&self, csrf: &str, password: &str, to: &std::path::Path) -> u16 {
        self.curl(&[
            "-o",
            to.to_str().unwrap(),
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            &format!("password={password}"),
            &self.url("/backup/download"),
        ])
        .0
    }
}

/// A running site and a browser session with its Panel Server `ps1` at
/// 127.77.`a`.10; [`Ps::text`] is the site file it runs.
pub struct Ps {
    pub site: RunningSite,
    pub text: String,
    pub web: Web,
}

impl std::ops::Deref for Ps {
    type Target = Web;

    fn deref(&self) -> &Web {
        &self.web
    }
}

impl Ps {
    /// The default site on octets `a`/`a + 1` ([`fast_site_text`]).
    pub fn start(a: u8) -> Self {
        Self::start_with(a, fast_site_text(a), &[])
    }

    /// Runs the site `text`, whose ps1 is at 127.77.`a`.10, with `args`
    /// added to `fieldtwin run`.
    pub fn start_with(a: u8, text: String, args: &[&str]) -> Self {
        let site = RunningSite::start(&text, args);
        let web = Web::of(&site, format!("127.77.{a}.10"));
        Self { site, text, web }
    }

    /// Logs in as SecurityAdmin with `pw`.
    pub fn login(&self, pw: &str) -> (u16, String) {
        self.login_as("SecurityAdmin", pw)
    }

    /// Moves the site's clock `secs` seconds on.
    pub fn advance(&self, secs: u64) {
        self.site
            .post_json("/api/v1/clock", &format!("{{\"advance_s\": {secs}}}"));
    }

    /// The audit log (`/logs/audit.csv`), which must be served.
    pub fn audit_csv(&self) -> String {
        let (code, body) = self.get("/logs/audit.csv");
        assert_eq!(code, 200, "{body}");
        body
    }
}
