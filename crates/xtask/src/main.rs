//! xtask: packaging tasks run by the Makefile (`cargo run -p xtask -- assets DIR`), and the
//! 7.0 template export generated from the 6.0 one (`cargo run -p xtask -- templates`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use clap::Parser;

/// Packaging tasks for Concierge (not installed).
#[derive(Debug, Parser)]
#[command(name = "xtask")]
enum Task {
    /// Write man1/<tool>.1 and completions/{bash,zsh,fish}/ for every tool under DIR.
    Assets {
        dir: PathBuf,
        /// The man pages' date, YYYY-MM-DD (the Makefile gives the last commit's, so that
        /// two builds of one commit are identical).
        #[arg(long, default_value = "")]
        date: String,
    },
    /// The bench's raw-socket floor: write FILE (a framed, pre-built request) to the trapper
    /// at ADDR, read the reply and print its payload. Nothing is built or checked per run.
    RawSend { addr: String, file: PathBuf },
    /// Write zabbix-templates/7.0/concierge_app.yaml, the 7.0 export, from the 6.0 one.
    Templates {
        /// The zabbix-templates directory.
        #[arg(default_value = "zabbix-templates")]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Task::parse() {
        Task::Assets { dir, date } => {
            for file in xtask::write_assets(&dir, &date)? {
                println!("{}", file.display());
            }
        }
        Task::RawSend { addr, file } => {
            let request = std::fs::read(&file)?;
            let mut s = TcpStream::connect(addr.as_str())?;
            s.write_all(&request)?;
            let mut header = [0u8; 13];
            s.read_exact(&mut header)?;
            let len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
            let mut payload = vec![0u8; len.min(1 << 20) as usize];
            s.read_exact(&mut payload)?;
            std::io::stdout().write_all(&payload)?;
            println!();
        }
        Task::Templates { dir } => {
            let old = std::fs::read_to_string(dir.join("concierge_app.yaml"))?;
            let path = dir.join("7.0").join("concierge_app.yaml");
            std::fs::write(&path, concierge_setup::templates::export_7_0(&old))?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
