//! The transport's half of XEP-0388 SASL2 logins: what [`C2sStream`] asks for during one
//! that needs storage, the clock or the session — XEP-0484 FAST token lookups, use and issue
//! (stored hashed, with `fast.token_lifetime_seconds`), and the XEP-0386 Bind2 features turned
//! on inline (XEP-0198 enable, XEP-0352 inactive, and module features such as XEP-0280
//! carbons through [`franca_core::Module::bind2_inline`]).
//!
//! [`C2sStream`]: franca_proto::c2s::C2sStream

use super::XmppStream;
use franca_core::util::{now_us, xep0082_datetime};
use franca_proto::csi::ClientState;
use franca_proto::fast::{self, StoredToken};
use franca_store::FastToken;
use franca_xml::Element;

impl XmppStream {
    /// [`Action::FastTokens`](franca_proto::c2s::Action::FastTokens): a token guess counts
    /// against the failed-login limits like a password guess.
    pub(super) async fn fast_tokens(&mut self, account: String, client_id: String) {
        if let Err(remaining) = self.ctx.logins.check(self.peer.ip(), &account) {
            let text = format!(
                "too many failed logins; try again in {} seconds",
                remaining.as_secs().max(1)
            );
            return self.stream.refuse_login(&text);
        }
        let now = now_us();
        let tokens = match self
            .ctx
            .server
            .store
            .fast_tokens(&account, &client_id)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(%account, "FAST token lookup failed: {e}");
                Vec::new()
            }
        };
        let candidates: Vec<StoredToken> = tokens
            .into_iter()
            .map(|t| StoredToken {
                expired: t.expires_us <= now,
                key: t.hash,
                mechanism: t.mechanism,
                count: t.count,
            })
            .collect();
        self.stream.provide_fast_tokens(&candidates);
    }

    /// [`Action::FastTokenUsed`](franca_proto::c2s::Action::FastTokenUsed).
    pub(super) async fn fast_token_used(
        &mut self,
        account: String,
        client_id: String,
        key: Vec<u8>,
        count: Option<u32>,
        invalidate: bool,
    ) {
        let used = self
            .ctx
            .server
            .store
            .use_fast_token(&account, &client_id, &key, count, invalidate, now_us())
            .await;
        let ok = used.unwrap_or_else(|e| {
            tracing::error!(%account, "recording a FAST token use failed: {e}");
            false
        });
        self.stream.fast_token_used(ok);
    }

    /// [`Action::IssueFastToken`](franca_proto::c2s::Action::IssueFastToken): a new token,
    /// of which only the hash is stored.
    pub(super) async fn issue_fast_token(
        &mut self,
        account: String,
        client_id: String,
        mechanism: &'static str,
    ) {
        let token = fast::new_token();
        let now = now_us();
        let lifetime = self.ctx.server.config.fast.token_lifetime_seconds;
        let lifetime_us = i64::try_from(lifetime)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        let expires_us = now.saturating_add(lifetime_us);
        let stored = FastToken {
            client_id,
            hash: fast::token_key(&token),
            mechanism: mechanism.to_owned(),
            expires_us,
            count: 0,
            new: true,
        };
        // Whole seconds: the expiry the client sees is never later than the stored one.
        let expiry = xep0082_datetime(expires_us - expires_us.rem_euclid(1_000_000));
        match self
            .ctx
            .server
            .store
            .put_fast_token(&account, &stored, now)
            .await
        {
            Ok(()) => self.stream.fast_token_issued(Some((token, expiry))),
            Err(e) => {
                tracing::error!(%account, "storing a FAST token failed: {e}");
                self.stream.fast_token_issued(None);
            }
        }
    }

    /// [`Action::Bind2Inline`](franca_proto::c2s::Action::Bind2Inline), for the session just
    /// bound.
    pub(super) async fn bind2_inline(
        &mut self,
        sm_enable: Option<(bool, Option<u32>)>,
        inactive: bool,
        extensions: Vec<Element>,
    ) {
        let mut answers = Vec::new();
        if let Some((resume, max)) = sm_enable {
            answers.push(self.sm_enable(resume, max));
        }
        if inactive {
            self.client_state(ClientState::Inactive);
        }
        if let Some(session) = self.session.clone() {
            let server = self.ctx.server.clone();
            for el in &extensions {
                if let Some(module) = server.modules.bind2_handler(&el.ns)
                    && let Some(answer) = module.bind2_inline(&server, &session, el).await
                {
                    answers.push(answer);
                }
            }
        }
        self.stream.bind2_enabled(answers);
    }
}
