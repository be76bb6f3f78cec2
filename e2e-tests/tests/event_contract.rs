//! The event contract's AsyncAPI document (`shared-events/contract/`), checked by the
//! AsyncAPI Initiative's own parser through `deploy/asyncapi-check`. shared-events' own tests
//! check that the document is current and that every event matches its JSON Schema; this
//! checks that tools which read AsyncAPI 3.0 accept it, `$ref`s into `schemas/` included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn asyncapi_check(document: &Path) -> Result<(Output, String), std::io::Error> {
    let output = Command::new(repository().join("deploy/asyncapi-check"))
        .arg(document)
        .output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output, report))
}

#[test]
fn the_asyncapi_document_passes_the_official_parser_and_a_broken_copy_does_not() -> TestResult {
    let contract = repository().join("shared-events/contract");
    let (output, report) = asyncapi_check(&contract.join("asyncapi.json"))?;
    assert!(output.status.success(), "{report}");
    let channels = shared_events::topics::ALL.len();
    let messages = shared_events::events::examples().len();
    assert!(
        report.contains(&format!(
            "valid AsyncAPI 3.0.0, {channels} channels, {messages} messages"
        )),
        "every topic and every event type is in the document: {report}"
    );

    // The same document with one event's schema missing is refused: the check reads the
    // schemas it refers to, and can fail.
    let broken = std::env::temp_dir().join(format!("asyncapi-broken-{}", std::process::id()));
    std::fs::create_dir_all(broken.join("schemas"))?;
    for entry in std::fs::read_dir(contract.join("schemas"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), broken.join("schemas").join(entry.file_name()))?;
    }
    std::fs::copy(contract.join("asyncapi.json"), broken.join("asyncapi.json"))?;
    std::fs::remove_file(broken.join("schemas/OrderCreated.json"))?;
    let (output, report) = asyncapi_check(&broken.join("asyncapi.json"))?;
    std::fs::remove_dir_all(&broken)?;
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.contains("OrderCreated"), "{report}");
    Ok(())
}
