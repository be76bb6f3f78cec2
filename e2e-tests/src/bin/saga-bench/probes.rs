//! What the bench reads from the machine while it runs: CPU time and memory of each part of
//! the stack from `/proc`, and PostgreSQL's commit counter.

use std::collections::HashMap;

use e2e_tests::TestResult;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// The services' names, as their processes are called.
pub const SERVICES: [&str; 3] = ["orders-svc", "payments-svc", "inventory-svc"];

/// CPU seconds (user + system) used so far by each part of the stack, read from /proc:
/// the three services, Kafka, PostgreSQL's processes together, and the bench itself (its
/// client shares the machine's two cores with the stack, so its cost belongs in the
/// picture). Each process is counted by its own PID, so one that exits between two samples
/// (an idle database connection the pool closed) takes only its own share with it, and the
/// figures stay a lower bound; summed by part, its whole past would be subtracted from the
/// others' work (PostgreSQL once read 0.00 ms per saga that way).
pub struct CpuSample(HashMap<(&'static str, u32), f64>);

impl CpuSample {
    pub fn take() -> TestResult<CpuSample> {
        let ticks_per_second = clock_ticks()?;
        let mut by_process: HashMap<(&'static str, u32), f64> = HashMap::new();
        for entry in std::fs::read_dir("/proc")? {
            let path = entry?.path();
            let Some(pid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Processes come and go while we read: skip any that vanished.
            let (Ok(comm), Ok(cmdline), Ok(stat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read(path.join("cmdline")),
                std::fs::read_to_string(path.join("stat")),
            ) else {
                continue;
            };
            let Some(part) = part_of(comm.trim(), &String::from_utf8_lossy(&cmdline)) else {
                continue;
            };
            // Fields after the command name's closing parenthesis: state is the first, utime
            // and stime the 12th and 13th.
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                by_process.insert((part, pid), (user + system) / ticks_per_second);
            }
        }
        // PID 0 is no process: the machine as a whole.
        let (busy, stolen) = machine_seconds(ticks_per_second)?;
        by_process.insert((WHOLE_MACHINE, 0), busy);
        by_process.insert((STOLEN, 0), stolen);
        Ok(CpuSample(by_process))
    }

    /// Seconds used since `earlier`, by part, largest first.
    pub fn since(self, earlier: &CpuSample) -> Vec<(String, f64)> {
        let mut by_part: HashMap<&'static str, f64> = HashMap::new();
        for (process, now) in self.0 {
            // A process started since `earlier` used all of its time in between.
            let before = earlier.0.get(&process).copied().unwrap_or(0.0);
            *by_part.entry(process.0).or_default() += (now - before).max(0.0);
        }
        let mut used: Vec<(String, f64)> = by_part
            .into_iter()
            .map(|(part, seconds)| (part.to_owned(), seconds))
            .collect();
        used.sort_by(|a, b| b.1.total_cmp(&a.1));
        used
    }
}

/// The CPU time of every process and of the kernel's own work (interrupts, softirqs), so
/// that what the parts above do not account for shows as the difference.
const WHOLE_MACHINE: &str = "whole machine";

/// Time the hypervisor gave this VM's cores to other guests while they had work ("steal"):
/// not the stack's CPU, so it is kept out of [`WHOLE_MACHINE`] and reported beside it, where
/// it says how much of a slow run is the host's doing.
const STOLEN: &str = "stolen by the hypervisor";

/// CPU seconds of all cores since boot from /proc/stat: busy (everything but idle, I/O wait
/// and steal) and stolen.
fn machine_seconds(ticks_per_second: f64) -> TestResult<(f64, f64)> {
    let (busy, stolen) = busy_and_stolen_ticks(&std::fs::read_to_string("/proc/stat")?)?;
    Ok((busy / ticks_per_second, stolen / ticks_per_second))
}

/// The busy and the stolen ticks of /proc/stat's `cpu` line, all cores together.
fn busy_and_stolen_ticks(stat: &str) -> TestResult<(f64, f64)> {
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .ok_or("/proc/stat has no cpu line")?
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    const IDLE: usize = 3;
    const IOWAIT: usize = 4;
    const STEAL: usize = 7;
    let busy: f64 = ticks
        .iter()
        .take(STEAL)
        .enumerate()
        .filter(|(i, _)| *i != IDLE && *i != IOWAIT)
        .map(|(_, t)| t)
        .sum();
    let stolen = ticks.get(STEAL).copied().unwrap_or(0.0);
    Ok((busy, stolen))
}

/// Which part of the stack a process is, by its name and command line.
fn part_of(comm: &str, cmdline: &str) -> Option<&'static str> {
    match comm {
        "orders-svc" => Some("orders-svc"),
        "payments-svc" => Some("payments-svc"),
        "inventory-svc" => Some("inventory-svc"),
        "postgres" => Some("postgres"),
        "saga-bench" => Some("saga-bench"),
        "java" if cmdline.contains("kafka.Kafka") => Some("kafka"),
        _ => None,
    }
}

/// The kernel's clock ticks per second, in which /proc reports CPU time.
fn clock_ticks() -> TestResult<f64> {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let ticks: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("getconf CLK_TCK answered {text:?}"))?;
    Ok(ticks)
}

/// The resident memory of each service process now, in MiB, by service name.
pub fn service_rss_mib() -> HashMap<String, f64> {
    let mut rss = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return rss;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if !SERVICES.contains(&comm) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        // "VmRSS:     17656 kB"
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok());
        if let Some(kib) = kib {
            let mib = rss.entry(comm.to_owned()).or_insert(0.0);
            *mib += kib / 1024.0;
        }
    }
    rss
}

/// Where the services' databases are: each reached as its owner role `<db>_svc` (password
/// the same) on the host of a base URL, on the base URL's port or a port of its own (one
/// PostgreSQL server per service).
pub struct ServiceDatabases {
    /// Each database with its URL.
    pub urls: Vec<(String, String)>,
}

impl ServiceDatabases {
    /// `ports` is empty (every database on `base`'s port) or gives one port per database.
    pub fn new(base: &str, databases: &[String], ports: &[u16]) -> TestResult<Self> {
        if !ports.is_empty() && ports.len() != databases.len() {
            return Err(format!(
                "--database-ports gives {} ports for {} databases",
                ports.len(),
                databases.len()
            )
            .into());
        }
        let base_url = reqwest::Url::parse(base)?;
        let mut urls = Vec::with_capacity(databases.len());
        for (index, database) in databases.iter().enumerate() {
            let mut own = base_url.clone();
            let role = format!("{database}_svc");
            own.set_username(&role)
                .and_then(|()| own.set_password(Some(&role)))
                .and_then(|()| match ports.get(index) {
                    Some(port) => own.set_port(Some(*port)),
                    None => Ok(()),
                })
                .map_err(|()| format!("cannot make {database}'s URL from {base}"))?;
            own.set_path(database);
            urls.push((database.clone(), own.to_string()));
        }
        Ok(Self { urls })
    }

    /// One connection to each database, for [`database_commits`].
    pub async fn connect(&self) -> TestResult<Vec<DatabaseConnection>> {
        let mut connections = Vec::with_capacity(self.urls.len());
        for (_, url) in &self.urls {
            connections.push(sea_orm::Database::connect(url.as_str()).await?);
        }
        Ok(connections)
    }
}

/// Commits so far in the services' databases, one connection to each, as `pg_stat_database`
/// counts them (read transactions included, as PostgreSQL counts every transaction that ends
/// in a commit).
pub async fn database_commits(connections: &[DatabaseConnection]) -> TestResult<i64> {
    let mut commits = 0;
    for db in connections {
        // Outside a transaction, each query reads the statistics afresh.
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()",
            ))
            .await?;
        commits += row.map_or(Ok(0), |row| row.try_get::<i64>("", "n"))?;
    }
    Ok(commits)
}

/// Adds `rows` inbox rows nine days old (past the default retention of eight) to each of
/// the services' databases.
pub async fn seed_expired_inbox(databases: &ServiceDatabases, rows: u64) -> TestResult {
    for (database, url) in &databases.urls {
        let db = sea_orm::Database::connect(url.as_str()).await?;
        eprintln!("seeding {rows} expired inbox rows in {database} …");
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO inbox (event_id, event_type, processed_at) \
             SELECT gen_random_uuid(), 'Seeded', now() - interval '9 days' \
             FROM generate_series(1, $1)",
            [i64::try_from(rows)?.into()],
        ))
        .await?;
        db.close().await?;
    }
    Ok(())
}

#[cfg(test)]
mod cpu_tests {
    use std::collections::HashMap;

    use super::{CpuSample, busy_and_stolen_ticks};

    #[test]
    fn steal_is_counted_apart_from_the_machines_busy_time() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 1 50 1000 7 2 9 30 40 0\ncpu0 50 0 25 500 3 1 4 15 20 0\n";
        assert_eq!(
            busy_and_stolen_ticks(stat).ok(),
            Some((162.0, 30.0)),
            "busy is user, nice, system, irq and softirq; guest is inside user already"
        );
        assert!(busy_and_stolen_ticks("intr 1 2 3\n").is_err());
    }

    #[test]
    fn a_process_that_exits_or_starts_between_samples_moves_only_its_own_share() {
        let earlier = CpuSample(HashMap::from([
            (("postgres", 10), 50.0),
            (("postgres", 11), 2.0),
            (("orders-svc", 20), 7.0),
        ]));
        // Backend 10 exited (a pool closed its connection); backend 12 is new.
        let now = CpuSample(HashMap::from([
            (("postgres", 11), 3.5),
            (("postgres", 12), 0.5),
            (("orders-svc", 20), 8.0),
        ]));
        let used: HashMap<String, f64> = now.since(&earlier).into_iter().collect();
        assert_eq!(
            used["postgres"], 2.0,
            "1.5 s of backend 11 and all 0.5 s of backend 12"
        );
        assert_eq!(used["orders-svc"], 1.0);
    }
}
