//! `agentgate chat`: the terminal around [`agentgate::client::ChatClient`].

use std::io::Write;
use std::process::ExitCode;

use agentgate::client::{
    Answer, ChatClient, ClientError, Event, Pending, default_tools, run_local_tool,
};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

const HELP: &str = "commands: /new (start over), /save FILE, /load FILE (a saved cursor), \
/undo (back one turn: later turns are forked away), /quit";

fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// Read one line after printing `prompt`; `None` at end of input.
async fn ask(lines: &mut Lines<BufReader<Stdin>>, prompt: &str) -> Option<String> {
    out(prompt);
    lines.next_line().await.ok().flatten()
}

/// Print a turn's events as they arrive.
fn show(event: Event) {
    match event {
        Event::Delta(text) => out(&text),
        Event::ToolCall { name, arguments } => out(&format!("\n  [tool {name} {arguments}]\n")),
        Event::ToolResult { name, ok } => out(&format!(
            "  [tool {name} {}]\n",
            if ok { "done" } else { "failed" }
        )),
    }
}

pub async fn run(url: &str, project: Option<&str>, agent: &str, token: Option<String>) -> ExitCode {
    let mut client = ChatClient::new(url, project, agent, token).with_tools(default_tools());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    out(&format!("chatting with {agent} at {url}; {HELP}\n"));
    loop {
        let Some(line) = ask(&mut lines, "you> ").await else {
            out("\n");
            return ExitCode::SUCCESS;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(command) = line.strip_prefix('/') {
            let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
            let arg = arg.trim();
            match name {
                "quit" | "exit" => return ExitCode::SUCCESS,
                "new" => {
                    client.new_conversation();
                    out("(a new conversation)\n");
                }
                "undo" => out(if client.undo() {
                    "(back one turn; what followed is forked away)\n"
                } else {
                    "(nothing to undo)\n"
                }),
                "save" if !arg.is_empty() => match client.cursor() {
                    Some(c) => match std::fs::write(arg, format!("{c}\n")) {
                        Ok(()) => out(&format!("(cursor saved to {arg})\n")),
                        Err(e) => out(&format!("(cannot write {arg}: {e})\n")),
                    },
                    None => out("(no conversation yet)\n"),
                },
                "load" if !arg.is_empty() => match std::fs::read_to_string(arg) {
                    Ok(c) => {
                        client.set_cursor(Some(c.trim().to_owned()));
                        out(&format!("(continuing the conversation saved in {arg})\n"));
                    }
                    Err(e) => out(&format!("(cannot read {arg}: {e})\n")),
                },
                _ => out(&format!("({HELP})\n")),
            }
            continue;
        }
        out("agent> ");
        let mut reply = client.say(line, show).await;
        // Answer what the agent asks of us until it has answered.
        loop {
            let pending = match &reply {
                Ok(r) if !r.pending.is_empty() => r.pending.clone(),
                Ok(_) => {
                    out("\n");
                    break;
                }
                Err(e) => {
                    report(e);
                    break;
                }
            };
            let mut answers = Vec::new();
            for p in pending {
                let Some(answer) = decide(&mut lines, p).await else {
                    return ExitCode::SUCCESS;
                };
                answers.push(answer);
            }
            out("agent> ");
            reply = client.answer(answers, show).await;
        }
    }
}

/// Ask the user about one pending action; `None` at end of input.
async fn decide(lines: &mut Lines<BufReader<Stdin>>, p: Pending) -> Option<Answer> {
    match p {
        Pending::ClientTool {
            action_id,
            name,
            arguments,
        } => {
            let local = default_tools().iter().any(|t| t.name == name);
            let text = if local {
                let yes = ask(lines, &format!("\nrun {name} {arguments}? [y/N] ")).await?;
                if yes.trim().eq_ignore_ascii_case("y") {
                    run_local_tool(&name, &arguments)
                } else {
                    "the user declined to run this tool".to_owned()
                }
            } else {
                ask(lines, &format!("\nresult of {name} {arguments}: ")).await?
            };
            Some(Answer::ToolResult { action_id, text })
        }
        Pending::Confirmation {
            action_id,
            tool,
            arguments,
        } => {
            let yes = ask(lines, &format!("\nallow {tool} {arguments}? [y/N] ")).await?;
            Some(Answer::Confirm {
                action_id,
                allow: yes.trim().eq_ignore_ascii_case("y"),
            })
        }
    }
}

fn report(e: &ClientError) {
    out(&format!("\n(error: {e})\n"));
}
