//! `cargo ktstr describe`: everything a test can use (work types, ops, topology presets,
//! canned scenarios, gates, `#[ktstr_test]` attributes), as a text listing or JSON. The
//! catalog is built from the code by `ktstr::describe`; this only prints it.

use clap::Args;
use ktstr::describe::Catalog;

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Print JSON: an object with the keys `work_types`, `ops`, `presets`, `scenarios`,
    /// `gates` and `attributes`, each a list of `{name, description, params}`.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DescribeArgs) -> anyhow::Result<i32> {
    let catalog = Catalog::new();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
    } else {
        print!("{}", catalog.render_text());
    }
    Ok(0)
}
