//! The peer of `scripts/bench-logs.sh`: rsigma-eval's own engine, driven the way its README
//! shows (parse each NDJSON line with serde_json, `process_event` on a `CorrelationEngine`
//! holding the rules), with no kmsentry code in between. Prints the number of results.
//! Usage: `rsigma_peer RULES.yml < events.ndjson`.

use std::io::BufRead;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: rsigma_peer RULES.yml"))?;
    let text = std::fs::read_to_string(path)?;
    let coll = rsigma_parser::parse_sigma_yaml(&text)?;
    let config = rsigma_eval::CorrelationConfig {
        timestamp_fallback: rsigma_eval::TimestampFallback::Skip,
        emit_detections: false,
        // Vault's audit device names its timestamp `time`; without it every event would skip
        // correlation and the peer would do less work than kmsentry.
        timestamp_fields: vec!["time".into()],
        ..Default::default()
    };
    let mut eng = rsigma_eval::CorrelationEngine::new(config);
    eng.add_collection(&coll)?;
    let mut n = 0u64;
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lock.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        n += eng.process_event(&rsigma_eval::JsonEvent::borrow(&v)).len() as u64;
    }
    println!("{n}");
    Ok(())
}
