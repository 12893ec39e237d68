//! `sqlx::migrate!` embeds common/migrations at compile time: a new or changed migration
//! must rebuild this crate, or a binary would ship without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
