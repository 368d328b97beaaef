//! Fuzzes the INI reader (`config::Ini::parse`) and the typed settings built
//! from it (`Config::from_ini`): any file must load or give an error, never a
//! panic, and an error is one line (it is what cron mails).

#![no_main]

use cncopgetprofile::InstallRoot;
use cncopgetprofile::internals::config::{Config, Ini};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/Config/cncop3.ini");
    match Ini::parse(path, text) {
        Ok(ini) => {
            if let Err(e) = Config::from_ini(&InstallRoot::new("/nonexistent"), ini) {
                assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
});
