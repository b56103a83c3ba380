//! What a wait shows: on a terminal, the link as a QR code and a live spinner; otherwise plain
//! lines, one per change, that read well in a log.

use std::{io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qrcode::{QrCode, render::unicode::Dense1x2};

use super::pending::View;

/// Whether stdout is a terminal a person watches.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// The QR code of `text` in Unicode half blocks, two modules a character. Light and dark are
/// swapped, as for a terminal's dark background; phone scanners read either way round.
pub fn qr(text: &str) -> Option<String> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .build(),
    )
}

/// The output of one wait.
pub struct Display {
    spinner: Option<ProgressBar>,
    last_line: Option<String>,
    last_link: Option<String>,
}

impl Display {
    pub fn new(terminal: bool) -> Self {
        let spinner = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_message("reading the grant");
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            spinner,
            last_line: None,
            last_link: None,
        }
    }

    /// A line above the spinner (or just a line).
    pub fn say(&self, line: &str) {
        match &self.spinner {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Shows the grant's link once, and again whenever the operator publishes a new one.
    pub fn link(&mut self, link: &str) {
        if self.last_link.as_deref() == Some(link) {
            return;
        }
        let again = self.last_link.is_some();
        self.last_link = Some(link.to_owned());
        let intro = if again {
            "A new authorization link was published; a Slack owner opens it to approve:"
        } else {
            "A Slack owner opens this link to approve the grant:"
        };
        let mut text = format!("{intro}\n\n  {link}\n");
        if self.spinner.is_some()
            && let Some(code) = qr(link)
        {
            text.push('\n');
            text.push_str(&code);
            text.push('\n');
        }
        self.say(&text);
    }

    /// The grant's state: the spinner's message, or a line when it changed.
    pub fn show(&mut self, view: &View) {
        let line = if view.message.is_empty() {
            view.summary()
        } else {
            format!("{}: {}", view.summary(), view.message)
        };
        match &self.spinner {
            Some(bar) => bar.set_message(line),
            None => {
                if self.last_line.as_deref() != Some(line.as_str()) {
                    println!("{line}");
                }
                self.last_line = Some(line);
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_drawn_with_half_blocks() {
        let code = qr("https://op.example.com/oauth/start/abc").expect("a code");
        assert!(code.contains('▀') || code.contains('▄') || code.contains('█'));
        let widths: Vec<usize> = code.lines().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "a square of lines");
    }
}
