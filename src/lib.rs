//! selfdeploy: a web server that deploys itself when its repository gets a push.
//!
//! The path of one push, module by module, is in ARCHITECTURE.md.

pub mod about;
pub mod api;
pub mod app;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod events;
pub mod logs;
pub mod pipeline;
pub mod probe;
pub mod process;
pub mod queue;
pub mod release;
pub mod restart;
pub mod secret;
pub mod socket;
pub mod status;
pub mod webhook;

pub use app::{App, AppState, router, run};
pub use config::{Config, Settings};
