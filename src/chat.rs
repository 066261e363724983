//! `agentgate chat`: the terminal around [`agentgate::client::ChatClient`].

use std::io::Write;
use std::process::ExitCode;

use agentgate::client::{
    Answer, ChatClient, ClientError, Event, Pending, default_tools, run_local_tool,
};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

const HELP: &str = "commands: /new (start over), /save FILE, /load FILE (a saved cursor), \
/undo (back one turn: later turns are forked away), /quit";

/// Text from the gateway (the model's words, tool arguments, error
/// messages) without terminal control sequences: a model steered by what it
/// read cannot move the cursor, rewrite the screen or fake a prompt.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

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
        Event::Delta(text) => out(&clean(&text)),
        Event::ToolCall { name, arguments } => {
            out(&clean(&format!("\n  [tool {name} {arguments}]\n")))
        }
        Event::ToolResult { name, ok } => out(&clean(&format!(
            "  [tool {name} {}]\n",
            if ok { "done" } else { "failed" }
        ))),
    }
}

pub async fn run(url: &str, project: Option<&str>, agent: &str, token: Option<String>) -> ExitCode {
    let mut client = ChatClient::new(url, project, agent, token).with_tools(default_tools());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    out(&format!("chatting with {agent} at {url}; {HELP}\n"));
    // At the end of input, the exit status says whether the last turn worked.
    let mut last_failed = false;
    loop {
        let Some(line) = ask(&mut lines, "you> ").await else {
            out("\n");
            return if last_failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
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
                    Some(c) => match save(arg, c) {
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
        last_failed = false;
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
                    // A failed answer to an action leaves the conversation
                    // waiting for it: go back to before this message.
                    client.abandon_turn();
                    last_failed = true;
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
                let yes = ask(lines, &clean(&format!("\nrun {name} {arguments}? [y/N] "))).await?;
                if yes.trim().eq_ignore_ascii_case("y") {
                    run_local_tool(&name, &arguments)
                } else {
                    "the user declined to run this tool".to_owned()
                }
            } else {
                ask(lines, &clean(&format!("\nresult of {name} {arguments}: "))).await?
            };
            Some(Answer::ToolResult { action_id, text })
        }
        Pending::Confirmation {
            action_id,
            tool,
            arguments,
        } => {
            let yes = ask(
                lines,
                &clean(&format!("\nallow {tool} {arguments}? [y/N] ")),
            )
            .await?;
            Some(Answer::Confirm {
                action_id,
                allow: yes.trim().eq_ignore_ascii_case("y"),
            })
        }
    }
}

fn report(e: &ClientError) {
    out(&clean(&format!("\n(error: {e})\n")));
}

/// Write a cursor for `/load` later, readable by this user only (it carries
/// the conversation, encrypted).
fn save(path: &str, cursor: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{cursor}\n").as_bytes())
}
