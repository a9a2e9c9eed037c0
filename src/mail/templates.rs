//! The texts of every mail, as data: one entry per kind and language. `{product}` is replaced
//! by `PRODUCT_NAME`. Adding a language is adding entries here and a tag to [`Locale`].

use super::MailKind;

/// The languages mails are written in. A user's is taken from `Accept-Language` at sign-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    En,
    De,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::En, Locale::De];

    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::De => "de",
        }
    }

    /// A stored tag; anything unknown reads as English.
    pub fn from_tag(tag: &str) -> Locale {
        Locale::ALL.into_iter().find(|locale| locale.tag() == tag).unwrap_or(Locale::En)
    }

    /// The most preferred supported language of an `Accept-Language` header (RFC 9110
    /// §12.5.4), by quality and then order; English when none is supported.
    pub fn from_accept_language(header: Option<&str>) -> Locale {
        let Some(header) = header else { return Locale::En };
        let mut best: Option<(u16, Locale)> = None;
        for range in header.split(',').take(20) {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|parameter| parameter.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16);
            let primary = tag.split('-').next().unwrap_or_default();
            let Some(locale) = Locale::ALL.into_iter().find(|locale| locale.tag() == primary) else { continue };
            if quality > 0 && best.is_none_or(|(best_quality, _)| quality > best_quality) {
                best = Some((quality, locale));
            }
        }
        best.map_or(Locale::En, |(_, locale)| locale)
    }
}

/// One mail's words.
#[derive(Debug)]
pub struct Template {
    pub subject: &'static str,
    pub paragraphs: &'static [&'static str],
    /// The label of the button for the mail's link, if it has one.
    pub action: Option<&'static str>,
    /// Said when the link does not work as a button (plain text, some clients).
    pub link_hint: &'static str,
    /// Introduces the short code, for kinds whose flow accepts one.
    pub code_hint: Option<&'static str>,
    pub footer: &'static str,
    pub signature: &'static str,
}

pub const TEMPLATES: &[(MailKind, Locale, Template)] = &[
    (
        MailKind::VerifyEmail,
        Locale::En,
        Template {
            subject: "Confirm your email for {product}",
            paragraphs: &["Confirm your email address to finish creating your {product} account."],
            action: Some("Confirm my email"),
            link_hint: "The link works for 24 hours:",
            code_hint: Some("Or enter this code on the confirmation page:"),
            footer: "If you did not sign up, ignore this email: no account is activated without it.",
            signature: "— {product}",
        },
    ),
    (
        MailKind::VerifyEmail,
        Locale::De,
        Template {
            subject: "Bestätigen Sie Ihre E-Mail-Adresse für {product}",
            paragraphs: &["Bestätigen Sie Ihre E-Mail-Adresse, um Ihr {product}-Konto fertig einzurichten."],
            action: Some("E-Mail-Adresse bestätigen"),
            link_hint: "Der Link ist 24 Stunden gültig:",
            code_hint: Some("Oder geben Sie diesen Code auf der Bestätigungsseite ein:"),
            footer: "Falls Sie sich nicht registriert haben, ignorieren Sie diese E-Mail: Ohne sie wird kein Konto aktiviert.",
            signature: "— {product}",
        },
    ),
    (
        MailKind::AlreadyRegistered,
        Locale::En,
        Template {
            subject: "You already have an account with {product}",
            paragraphs: &[
                "Someone tried to create a {product} account with this email address, but you already have one.",
                "Sign in with your password, or choose a new one with the button below.",
            ],
            action: Some("Choose a new password"),
            link_hint: "The link works for 1 hour:",
            code_hint: None,
            footer: "If this was not you, ignore this email: your account has not changed.",
            signature: "— {product}",
        },
    ),
    (
        MailKind::AlreadyRegistered,
        Locale::De,
        Template {
            subject: "Sie haben bereits ein Konto bei {product}",
            paragraphs: &[
                "Jemand wollte mit dieser E-Mail-Adresse ein {product}-Konto anlegen, aber Sie haben bereits eines.",
                "Melden Sie sich mit Ihrem Passwort an oder wählen Sie über die Schaltfläche unten ein neues.",
            ],
            action: Some("Neues Passwort wählen"),
            link_hint: "Der Link ist 1 Stunde gültig:",
            code_hint: None,
            footer: "Falls Sie das nicht waren, ignorieren Sie diese E-Mail: Ihr Konto ist unverändert.",
            signature: "— {product}",
        },
    ),
    (
        MailKind::ResetPassword,
        Locale::En,
        Template {
            subject: "Reset your {product} password",
            paragraphs: &["Someone asked to reset the password of your {product} account."],
            action: Some("Choose a new password"),
            link_hint: "The link works for 1 hour:",
            code_hint: None,
            footer: "If you did not ask for this, ignore this email: your password has not changed.",
            signature: "— {product}",
        },
    ),
    (
        MailKind::ResetPassword,
        Locale::De,
        Template {
            subject: "Setzen Sie Ihr {product}-Passwort zurück",
            paragraphs: &["Jemand möchte das Passwort Ihres {product}-Kontos zurücksetzen."],
            action: Some("Neues Passwort wählen"),
            link_hint: "Der Link ist 1 Stunde gültig:",
            code_hint: None,
            footer: "Falls Sie das nicht angefordert haben, ignorieren Sie diese E-Mail: Ihr Passwort ist unverändert.",
            signature: "— {product}",
        },
    ),
    (
        MailKind::PasswordChanged,
        Locale::En,
        Template {
            subject: "Your {product} password was changed",
            paragraphs: &[
                "The password of your {product} account was just changed, and every session was signed out.",
                "If that was you, there is nothing more to do.",
            ],
            action: Some("It was not me: reset my password"),
            link_hint: "If it was not you, choose a new password now:",
            code_hint: None,
            footer: "We send this notice every time the password changes.",
            signature: "— {product}",
        },
    ),
    (
        MailKind::PasswordChanged,
        Locale::De,
        Template {
            subject: "Ihr {product}-Passwort wurde geändert",
            paragraphs: &[
                "Das Passwort Ihres {product}-Kontos wurde soeben geändert, und alle Sitzungen wurden abgemeldet.",
                "Wenn Sie das waren, ist nichts weiter zu tun.",
            ],
            action: Some("Das war ich nicht: Passwort zurücksetzen"),
            link_hint: "Falls Sie es nicht waren, wählen Sie jetzt ein neues Passwort:",
            code_hint: None,
            footer: "Diese Nachricht senden wir bei jeder Änderung des Passworts.",
            signature: "— {product}",
        },
    ),
];

/// The template of `kind` in `locale` (every pair exists: a unit test checks).
pub fn template(kind: MailKind, locale: Locale) -> Option<&'static Template> {
    TEMPLATES.iter().find(|(k, l, _)| *k == kind && *l == locale).map(|(_, _, template)| template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_every_language() {
        for kind in
            [MailKind::VerifyEmail, MailKind::AlreadyRegistered, MailKind::ResetPassword, MailKind::PasswordChanged]
        {
            for locale in Locale::ALL {
                assert!(template(kind, locale).is_some(), "{kind:?} {locale:?}");
            }
        }
    }

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        for (header, expected) in [
            (None, Locale::En),
            (Some("de-DE,de;q=0.9,en;q=0.8"), Locale::De),
            (Some("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7"), Locale::En),
            (Some("fr, de;q=0.5"), Locale::De),
            (Some("en;q=0.2, DE;q=0.3"), Locale::De),
            (Some("de;q=0, en;q=0.1"), Locale::En),
            (Some("*"), Locale::En),
            (Some(";;;,,,q=9"), Locale::En),
        ] {
            assert_eq!(Locale::from_accept_language(header), expected, "{header:?}");
        }
        assert_eq!(Locale::from_tag("de"), Locale::De);
        assert_eq!(Locale::from_tag("xx"), Locale::En);
    }
}
