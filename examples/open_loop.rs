//! Benchmark helper: open and close PATH N times per round, print the median µs per
//! open+close over ROUNDS rounds. `open_loop PATH [N] [ROUNDS]`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: open_loop PATH [N] [ROUNDS]");
        std::process::exit(2);
    };
    let n: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(7);
    let mut per_op = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        for _ in 0..n {
            match std::fs::File::open(path) {
                Ok(f) => drop(f),
                Err(e) => {
                    eprintln!("open_loop: {path}: {e}");
                    std::process::exit(1);
                }
            }
        }
        per_op.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    per_op.sort_by(|a, b| a.total_cmp(b));
    println!("{:.3}", per_op[per_op.len() / 2]);
}
