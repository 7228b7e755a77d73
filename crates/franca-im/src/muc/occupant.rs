//! Occupants, roles and affiliations (XEP-0045 §5), and nicknames (RFC 8266).
//!
//! An affiliation is long-lived and kept per bare JID (owner, admin, member, outcast); a role
//! lasts for one visit (moderator, participant, visitor). What one occupant may do to another is
//! decided here, in the tables of XEP-0045 §5.1.1–§5.2.1.

use franca_xml::Element;
use jid::FullJid;
use precis_profiles::Nickname;
use precis_profiles::precis_core::profile::PrecisFastInvocation;

/// A long-lived relation to the room (XEP-0045 §5.2), ordered by privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn name(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A role for the length of a visit (XEP-0045 §5.1), ordered by privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// The role an affiliation enters with (XEP-0045 §5.1.2): owners and admins moderate, members
/// speak, others speak unless the room is moderated.
pub fn default_role(affiliation: Affiliation, moderated: bool) -> Role {
    match affiliation {
        Affiliation::Owner | Affiliation::Admin => Role::Moderator,
        Affiliation::Member => Role::Participant,
        Affiliation::None if moderated => Role::Visitor,
        Affiliation::None => Role::Participant,
        Affiliation::Outcast => Role::None,
    }
}

/// One occupant: a real full JID in the room under a nickname.
#[derive(Debug, Clone)]
pub struct Occupant {
    pub nick: String,
    /// [`nick_key`] of `nick`, for conflict checks.
    pub key: String,
    pub jid: FullJid,
    pub role: Role,
    /// XEP-0421: stable for the user's bare JID in this room.
    pub id: String,
    /// The occupant's last presence: its `show`, `status` and extensions (the MUC `<x/>`
    /// removed), repeated in every presence the room sends about it.
    pub presence: Element,
}

/// RFC 8266 Nickname profile: the nick must be non-empty, allowed by the FreeformClass (no
/// control characters), already in its enforced form (no leading, trailing or doubled
/// spaces; NFKC), and at most `max_chars` characters.
pub fn valid_nick(nick: &str, max_chars: usize) -> bool {
    nick.chars().count() <= max_chars && matches!(Nickname::enforce(nick), Ok(n) if n == nick)
}

/// What two nicks are compared by (RFC 8266 §2.4: case-insensitively, after the same
/// mapping), so `Juliet` and `juliet` conflict.
pub fn nick_key(nick: &str) -> String {
    match Nickname::enforce(nick) {
        Ok(n) => n.to_lowercase(),
        Err(_) => nick.to_lowercase(),
    }
}

/// Whether an occupant with `actor` role and affiliation may change the role of an occupant
/// with `target` affiliation and role to `new` (XEP-0045 §5.1.1, §8.2–§8.6, §9.6–§9.7).
pub fn may_set_role(
    actor: (Affiliation, Role),
    target: (Affiliation, Role),
    new: Role,
) -> Result<(), RoleRefusal> {
    let (actor_aff, actor_role) = actor;
    let (target_aff, target_role) = target;
    if actor_role != Role::Moderator {
        return Err(RoleRefusal::Forbidden);
    }
    // Moderator status itself is granted and revoked by admins and owners only (§9.6).
    if (new == Role::Moderator || target_role == Role::Moderator) && actor_aff < Affiliation::Admin
    {
        return Err(RoleRefusal::NotAllowed);
    }
    // Nobody changes the role of someone with a higher affiliation; admins and owners keep
    // their moderator role against anyone but an owner (§8.2, §9.7).
    if target_aff > actor_aff
        || (target_aff >= Affiliation::Admin && actor_aff < Affiliation::Owner)
        || (target_aff == Affiliation::Owner && new != Role::Moderator)
    {
        return Err(RoleRefusal::NotAllowed);
    }
    Ok(())
}

/// Whether `actor` may change `target`'s affiliation from `old` to `new` (XEP-0045 §9–§10):
/// owners may change anything; admins may only move users below admin between outcast, none
/// and member.
pub fn may_set_affiliation(
    actor: Affiliation,
    old: Affiliation,
    new: Affiliation,
) -> Result<(), RoleRefusal> {
    match actor {
        Affiliation::Owner => Ok(()),
        Affiliation::Admin if old < Affiliation::Admin && new < Affiliation::Admin => Ok(()),
        Affiliation::Admin => Err(RoleRefusal::NotAllowed),
        _ => Err(RoleRefusal::Forbidden),
    }
}

/// Why a role or affiliation change is refused (XEP-0045 error conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleRefusal {
    /// The actor lacks the privilege altogether.
    Forbidden,
    /// The actor may not do this to this target.
    NotAllowed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8266_nicknames() {
        for ok in ["juliet", "Juliet Capulet", "Ĵuliet", "日本", "a"] {
            assert!(valid_nick(ok, 64), "{ok:?}");
        }
        for bad in [
            "",
            " juliet",
            "juliet ",
            "two  spaces",
            "tab\there",
            "bell\u{7}",
            "ｊｕｌｉｅｔ",
        ] {
            assert!(!valid_nick(bad, 64), "{bad:?}");
        }
        assert!(valid_nick(&"x".repeat(64), 64));
        assert!(!valid_nick(&"x".repeat(65), 64));
        assert_eq!(nick_key("Juliet"), nick_key("juliet"));
        assert_ne!(nick_key("juliet"), nick_key("romeo"));
    }

    #[test]
    fn xep0045_5_1_2_default_roles() {
        assert_eq!(default_role(Affiliation::Owner, false), Role::Moderator);
        assert_eq!(default_role(Affiliation::Admin, true), Role::Moderator);
        assert_eq!(default_role(Affiliation::Member, true), Role::Participant);
        assert_eq!(default_role(Affiliation::None, false), Role::Participant);
        assert_eq!(default_role(Affiliation::None, true), Role::Visitor);
    }

    #[test]
    fn xep0045_8_2_who_may_kick_whom() {
        use Affiliation as A;
        use Role as R;
        let kick = |actor, target| may_set_role(actor, target, R::None);
        // A moderator kicks a participant; a participant kicks nobody.
        assert_eq!(
            kick((A::None, R::Moderator), (A::None, R::Participant)),
            Ok(())
        );
        assert_eq!(
            kick((A::Member, R::Participant), (A::None, R::Participant)),
            Err(RoleRefusal::Forbidden)
        );
        // Nobody kicks an admin or owner but an owner kicks an admin.
        assert_eq!(
            kick((A::Admin, R::Moderator), (A::Admin, R::Moderator)),
            Err(RoleRefusal::NotAllowed)
        );
        assert_eq!(
            kick((A::Owner, R::Moderator), (A::Admin, R::Moderator)),
            Ok(())
        );
        assert_eq!(
            kick((A::Owner, R::Moderator), (A::Owner, R::Moderator)),
            Err(RoleRefusal::NotAllowed)
        );
        // Voice is a moderator's to give; moderator status an admin's.
        assert_eq!(
            may_set_role(
                (A::None, R::Moderator),
                (A::None, R::Visitor),
                R::Participant
            ),
            Ok(())
        );
        assert_eq!(
            may_set_role(
                (A::None, R::Moderator),
                (A::None, R::Participant),
                R::Moderator
            ),
            Err(RoleRefusal::NotAllowed)
        );
        assert_eq!(
            may_set_role(
                (A::Admin, R::Moderator),
                (A::Member, R::Participant),
                R::Moderator
            ),
            Ok(())
        );
    }

    #[test]
    fn xep0045_9_admins_manage_members_and_outcasts_owners_everything() {
        use Affiliation as A;
        assert_eq!(may_set_affiliation(A::Admin, A::None, A::Outcast), Ok(()));
        assert_eq!(may_set_affiliation(A::Admin, A::Member, A::None), Ok(()));
        assert_eq!(
            may_set_affiliation(A::Admin, A::Admin, A::Outcast),
            Err(RoleRefusal::NotAllowed)
        );
        assert_eq!(
            may_set_affiliation(A::Admin, A::None, A::Admin),
            Err(RoleRefusal::NotAllowed)
        );
        assert_eq!(may_set_affiliation(A::Owner, A::Admin, A::Outcast), Ok(()));
        assert_eq!(
            may_set_affiliation(A::Member, A::None, A::Member),
            Err(RoleRefusal::Forbidden)
        );
    }
}
