//! Submits one task and waits for its end: `submit <gateway URL> <tool> [name=value ...]`, the
//! key (if the gateway needs one) in `WHARF_API_KEY`. A value is read as JSON when it parses,
//! else as a string.

use wharf_client::Client;
use wharf_contract::SubmitTask;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(tool)) = (args.next(), args.next()) else {
        return Err("usage: submit <gateway URL> <tool> [name=value ...]".into());
    };
    let mut wharf = Client::new(&base)?;
    if let Ok(key) = std::env::var("WHARF_API_KEY") {
        wharf = wharf.with_credential(&key)?;
    }
    let mut task = SubmitTask::new(tool);
    for pair in args {
        let (name, value) = pair.split_once('=').ok_or("arguments are name=value")?;
        let value: serde_json::Value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
        task = task.argument(name, value);
    }
    let accepted = wharf.submit(&task).await?;
    eprintln!("task {} accepted", accepted.task.id);
    let done = wharf.wait(accepted.task.id).await?;
    println!("{}", serde_json::to_string_pretty(&done)?);
    Ok(())
}
