//! Headless Chromium, for what a person does in a browser.

use std::time::Duration;

use super::tools::{TempDir, free_port, tool};

/// Headless Chromium driven through ChromeDriver (WebDriver), for what a person does in a
/// browser. `make test` installs both (hack/browser.sh) and exports `CHROMEDRIVER`.
pub struct Browser {
    driver: std::process::Child,
    pub client: fantoccini::Client,
    _profile: TempDir,
}

impl Browser {
    /// Opens `link`, clicks Allow on Slack's page, and waits for the operator's page: its title.
    pub async fn approve(&self, link: &str) -> String {
        use fantoccini::Locator;
        let client = &self.client;
        client
            .goto(link)
            .await
            .expect("open the authorization link");
        client
            .find(Locator::Id("allow"))
            .await
            .expect("Slack's Allow button")
            .click()
            .await
            .expect("click Allow");
        client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("title"))
            .await
            .expect("a page")
            .text()
            .await
            .expect("title text")
    }

    /// The page shown now, read as a person reads it, under `heading`.
    pub async fn page(&self, heading: String) -> BrowserPage {
        let client = &self.client;
        let text = client
            .find(fantoccini::Locator::Css("body"))
            .await
            .expect("body")
            .text()
            .await
            .expect("text");
        let url = client.current_url().await.expect("url").to_string();
        BrowserPage { heading, text, url }
    }

    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chromedriver = tool("CHROMEDRIVER");
        let port = free_port();
        let driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::new("chromium-profile");
        let capabilities: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-quic",
                    format!("--user-data-dir={}", profile.path.display()),
                ]
            }
        }))
        .expect("capabilities");
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = String::new();
        for _ in 0..100 {
            match fantoccini::ClientBuilder::rustls()
                .expect("TLS for the WebDriver client")
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Self {
                        driver,
                        client,
                        _profile: profile,
                    };
                }
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not start headless Chromium through ChromeDriver at {url}: {last_error}");
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A page as the browser showed it.
#[derive(Debug)]
pub struct BrowserPage {
    pub heading: String,
    pub text: String,
    pub url: String,
}

/// A Slack owner opening `link` in headless Chromium and clicking Allow on Slack's page: the
/// page the operator answers with, once it shows a title.
pub async fn approve_in_browser(link: &str) -> BrowserPage {
    use fantoccini::Locator;
    let browser = Browser::start().await;
    let heading = browser.approve(link).await;
    let page = browser.page(heading).await;
    browser.close().await;
    page
}
