//! Keeping a conversation within its budget when it is sealed.
//!
//! The policy (docs/cursor-claims.md): image parts older than
//! `keep_images_turns` turns become a text placeholder; while the history is
//! over `history_budget_bytes`, whole turns are dropped from the oldest (a turn
//! starts at a user message, so a tool call never loses its result); the
//! current turn and pending actions are never dropped; if that is not enough,
//! the remaining images become placeholders too.

use crate::domain::{HistoryItem, UserPart};

/// Per-agent growth limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub history_bytes: usize,
    pub keep_images_turns: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            history_bytes: 262_144,
            keep_images_turns: 2,
        }
    }
}

/// Index of the first item of each turn.
fn turn_starts(history: &[HistoryItem]) -> Vec<usize> {
    let mut starts: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, item)| item.starts_turn())
        .map(|(i, _)| i)
        .collect();
    if starts.first() != Some(&0) && !history.is_empty() {
        starts.insert(0, 0);
    }
    starts
}

fn placeholder(media_type: &str) -> UserPart {
    UserPart::Text {
        text: format!("[image ({media_type}) removed from the conversation history]"),
    }
}

/// Replace image parts in items before `until` with a text placeholder.
/// Returns whether anything changed.
fn drop_images(history: &mut [HistoryItem], until: usize) -> bool {
    let mut changed = false;
    for item in &mut history[..until] {
        if let HistoryItem::User { parts } = item {
            for part in parts.iter_mut() {
                if let UserPart::Image { media_type, .. } = part {
                    *part = placeholder(media_type);
                    changed = true;
                }
            }
        }
    }
    changed
}

fn item_size(item: &HistoryItem) -> usize {
    // Serialising into a counting sink gives the exact JSON size without allocating.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail; a failure would only undercount.
    let _ = serde_json::to_writer(&mut c, item);
    c.0 + 1
}

/// Replace images older than the last `keep_turns` turns with placeholders.
pub fn drop_old_images(history: &mut [HistoryItem], keep_turns: usize) {
    let starts = turn_starts(history);
    if starts.len() > keep_turns {
        // With keep_turns = 0 every image goes, the current turn's included.
        let cut = starts
            .get(starts.len() - keep_turns)
            .copied()
            .unwrap_or(history.len());
        drop_images(history, cut);
    }
}

/// Drop the oldest whole turns until the history's JSON fits `budget` bytes,
/// never the current turn; then, if still over, replace every image.
pub fn fit_budget(history: &mut Vec<HistoryItem>, budget: usize) {
    let sizes: Vec<usize> = history.iter().map(item_size).collect();
    let mut total: usize = sizes.iter().sum();
    let starts = turn_starts(history);
    // Never drop the last (current) turn.
    let mut drop_until = 0;
    for window in starts.windows(2) {
        if total <= budget {
            break;
        }
        let (from, to) = (window[0], window[1]);
        total -= sizes[from..to].iter().sum::<usize>();
        drop_until = to;
    }
    history.drain(..drop_until);
    if total > budget {
        let len = history.len();
        drop_images(history, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AssistantPart, ToolCall};

    fn image(n: usize) -> HistoryItem {
        HistoryItem::User {
            parts: vec![
                UserPart::Text {
                    text: format!("look {n}"),
                },
                UserPart::Image {
                    media_type: "image/png".into(),
                    data: "A".repeat(1000),
                },
            ],
        }
    }

    #[test]
    fn images_older_than_keep_turns_become_placeholders() {
        let mut h = vec![
            image(1),
            HistoryItem::assistant_text("a1"),
            image(2),
            HistoryItem::assistant_text("a2"),
            image(3),
            HistoryItem::assistant_text("a3"),
        ];
        drop_old_images(&mut h, 2);
        let has_image = |i: &HistoryItem| match i {
            HistoryItem::User { parts } => {
                parts.iter().any(|p| matches!(p, UserPart::Image { .. }))
            }
            _ => false,
        };
        assert!(!has_image(&h[0]));
        assert!(has_image(&h[2]));
        assert!(has_image(&h[4]));
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn over_budget_drops_oldest_whole_turns_and_keeps_tool_pairs() {
        let mut h = Vec::new();
        for n in 0..20 {
            h.push(HistoryItem::user_text(format!(
                "question {n} {}",
                "x".repeat(200)
            )));
            h.push(HistoryItem::Assistant {
                parts: vec![],
                tool_calls: vec![ToolCall {
                    id: format!("c{n}"),
                    name: "clock".into(),
                    arguments: "{}".into(),
                }],
            });
            h.push(HistoryItem::ToolResult {
                call_id: format!("c{n}"),
                name: "clock".into(),
                content: "noon".into(),
                is_error: false,
            });
            h.push(HistoryItem::Assistant {
                parts: vec![AssistantPart::Text {
                    text: "answer".into(),
                }],
                tool_calls: vec![],
            });
        }
        fit_budget(&mut h, 2_000);
        assert!(h.iter().map(item_size).sum::<usize>() <= 2_000);
        assert!(h[0].starts_turn(), "history starts at a turn boundary");
        assert_eq!(h.len() % 4, 0, "only whole turns were dropped");
        assert_eq!(
            h.last(),
            Some(&HistoryItem::Assistant {
                parts: vec![AssistantPart::Text {
                    text: "answer".into()
                }],
                tool_calls: vec![],
            })
        );
    }

    #[test]
    fn keeping_zero_turns_of_images_drops_them_all() {
        let mut h = vec![image(1), HistoryItem::assistant_text("a1")];
        drop_old_images(&mut h, 0);
        assert!(
            matches!(&h[0], HistoryItem::User { parts } if parts.iter().all(|p| matches!(p, UserPart::Text { .. })))
        );
    }

    #[test]
    fn the_current_turn_is_never_dropped() {
        let mut h = vec![
            HistoryItem::user_text("old"),
            HistoryItem::assistant_text("old answer"),
            HistoryItem::user_text("x".repeat(5000)),
            HistoryItem::assistant_text("y".repeat(5000)),
        ];
        fit_budget(&mut h, 100);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0], HistoryItem::user_text("x".repeat(5000)));
    }
}
