"""What Aircall AI "heard" on an emulated call: transcript, summary, topics, sentiment, action items.

Pure and seeded: the same seed and the same call facts give the same text,
so a generated (historical) call and a live one serve stable content, and a
backfill run twice reads the same insights. :mod:`.aircall_ai` decides *when*
an insight exists and how it is served; this module only writes it.

Shapes follow ``shared/reference/aircall-live.md`` §3.2: utterances carry
``start_time`` / ``end_time`` in seconds from the start of the call, the
``text``, ``participant_type`` ``internal`` (the agent, with ``user_id``) or
``external`` (with ``phone_number``); sentiment is ``POSITIVE`` /
``NEUTRAL`` / ``NEGATIVE`` per external participant (§3.2, ai-assist).

The language follows the line's country (French and German lines speak
French and German, every other line English): Aircall transcribes in the
call's language, and a client must not assume English text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

__all__ = ["SENTIMENTS", "CallInsights", "build_insights", "language_for"]

SENTIMENTS = ("POSITIVE", "NEUTRAL", "NEGATIVE")


@dataclass(frozen=True, slots=True)
class _Scenario:
    topics: tuple[str, ...]
    summary: str                      # {agent}: the agent's first name
    actions: tuple[str, ...]
    dialogue: tuple[tuple[str, str], ...]  # ("a" agent | "c" customer, text); the last line closes the call
    mood: tuple[float, float, float]  # weights of POSITIVE, NEUTRAL, NEGATIVE


_EN = (
    _Scenario(
        ("billing", "refund", "invoice"),
        "The customer was charged twice on the March invoice. {agent} confirmed the duplicate charge, "
        "started a refund and said it would show within five business days.",
        ("Issue the refund for the duplicate March charge", "Email the corrected invoice to the customer",
         "Check the payment provider for other duplicate charges"),
        (("a", "Thanks for calling, how can I help you today?"),
         ("c", "Hi, I think I was charged twice for March."),
         ("a", "Let me look at your account. Can you confirm the email on file?"),
         ("c", "Sure, it's the one I used when we signed up."),
         ("a", "I can see two payments on the third of March, you're right."),
         ("c", "Okay, can you refund one of them?"),
         ("a", "I've started the refund, it takes up to five business days."),
         ("c", "Great, and could you send me a corrected invoice?"),
         ("a", "Of course, you'll have it by email today."),
         ("c", "Perfect, thank you for your help. Bye.")),
        (0.55, 0.35, 0.10),
    ),
    _Scenario(
        ("demo", "pricing", "onboarding"),
        "{agent} presented the Pro plan and its pricing. The customer wants a demo for the team and asked "
        "how long onboarding takes.",
        ("Book a product demo with the customer's team", "Send the Pro plan pricing sheet",
         "Share the onboarding checklist"),
        (("a", "Hi, this is a follow-up on your trial, do you have a minute?"),
         ("c", "Yes, we were just talking about it."),
         ("a", "How is the team finding it so far?"),
         ("c", "Good, but we need to know what the Pro plan costs."),
         ("a", "It's priced per user per month, with a discount on yearly plans."),
         ("c", "Could you show it to the whole team?"),
         ("a", "Happy to, I'll propose a demo slot next week."),
         ("c", "And how long does onboarding usually take?"),
         ("a", "Usually two weeks, I'll send you the checklist."),
         ("c", "Sounds good, talk soon.")),
        (0.60, 0.35, 0.05),
    ),
    _Scenario(
        ("technical issue", "login", "escalation"),
        "The customer cannot log in since the last update and gets an error on the mobile app. {agent} "
        "reproduced the issue and escalated it to the technical team.",
        ("Escalate the login error to the technical team", "Call the customer back with a fix",
         "Send the workaround for the web app"),
        (("c", "Hello, I can't log in to the app since yesterday."),
         ("a", "I'm sorry to hear that. What do you see when you try?"),
         ("c", "An error message right after I type my password."),
         ("a", "Is it on the mobile app or in the browser?"),
         ("c", "The mobile app. It's really annoying, I need it for work."),
         ("a", "I can reproduce it here, it looks like a bug from the last update."),
         ("c", "So what do I do in the meantime?"),
         ("a", "The web app works, and I'm escalating this to our technical team."),
         ("c", "Okay. Please call me back when it's fixed."),
         ("a", "I will. Thanks for your patience.")),
        (0.10, 0.40, 0.50),
    ),
    _Scenario(
        ("delivery", "order", "cancellation"),
        "The customer's order has not arrived after two weeks and they are considering cancelling. {agent} "
        "opened an investigation with the carrier and offered express shipping of a replacement.",
        ("Open an investigation with the carrier", "Ship a replacement by express delivery",
         "Follow up with the customer on Friday"),
        (("c", "Hi, I ordered two weeks ago and nothing has arrived."),
         ("a", "Let me check the tracking for your order."),
         ("c", "If it doesn't come this week I want to cancel."),
         ("a", "I understand. The carrier shows it stuck at the depot."),
         ("c", "That's not great."),
         ("a", "I'm opening an investigation and I can send a replacement by express."),
         ("c", "Okay, that would help."),
         ("a", "You'll get the new tracking number by email."),
         ("c", "Alright, thanks."),
         ("a", "I'll follow up with you on Friday. Have a good day.")),
        (0.25, 0.45, 0.30),
    ),
)

_FR = (
    _Scenario(
        ("facturation", "remboursement", "facture"),
        "Le client a été prélevé deux fois sur la facture de mars. {agent} a confirmé le double prélèvement, "
        "lancé le remboursement et annoncé un délai de cinq jours ouvrés.",
        ("Rembourser le double prélèvement de mars", "Envoyer la facture corrigée par e-mail",
         "Vérifier les autres prélèvements en double"),
        (("a", "Bonjour, merci de votre appel, que puis-je faire pour vous ?"),
         ("c", "Bonjour, j'ai été prélevé deux fois en mars."),
         ("a", "Je regarde votre compte. Vous me confirmez votre adresse e-mail ?"),
         ("c", "Oui, c'est celle de l'inscription."),
         ("a", "Je vois bien deux paiements le trois mars."),
         ("c", "Vous pouvez m'en rembourser un ?"),
         ("a", "C'est lancé, comptez cinq jours ouvrés."),
         ("c", "Et une facture corrigée ?"),
         ("a", "Je vous l'envoie par e-mail aujourd'hui."),
         ("c", "Parfait, merci beaucoup. Au revoir.")),
        (0.55, 0.35, 0.10),
    ),
    _Scenario(
        ("démo", "tarifs", "mise en place"),
        "{agent} a présenté l'offre Pro et ses tarifs. Le client souhaite une démo pour son équipe et a demandé "
        "la durée de la mise en place.",
        ("Planifier une démo avec l'équipe du client", "Envoyer la grille tarifaire de l'offre Pro",
         "Partager la liste de mise en place"),
        (("a", "Bonjour, je vous appelle au sujet de votre essai, vous avez une minute ?"),
         ("c", "Oui, on en parlait justement."),
         ("a", "Comment l'équipe le trouve ?"),
         ("c", "Bien, mais il nous faut le prix de l'offre Pro."),
         ("a", "C'est un prix par utilisateur et par mois, avec une remise à l'année."),
         ("c", "Vous pourriez le présenter à toute l'équipe ?"),
         ("a", "Avec plaisir, je vous propose une démo la semaine prochaine."),
         ("c", "Et la mise en place prend combien de temps ?"),
         ("a", "Deux semaines en général, je vous envoie la liste."),
         ("c", "Très bien, à bientôt.")),
        (0.60, 0.35, 0.05),
    ),
    _Scenario(
        ("problème technique", "connexion", "escalade"),
        "Le client ne peut plus se connecter depuis la dernière mise à jour de l'application mobile. {agent} a "
        "reproduit le problème et l'a transmis à l'équipe technique.",
        ("Transmettre l'erreur de connexion à l'équipe technique", "Rappeler le client avec un correctif",
         "Envoyer la solution de contournement web"),
        (("c", "Bonjour, je n'arrive plus à me connecter depuis hier."),
         ("a", "Désolé. Quel message voyez-vous ?"),
         ("c", "Une erreur juste après le mot de passe."),
         ("a", "Sur l'application mobile ou dans le navigateur ?"),
         ("c", "Sur le mobile. C'est vraiment pénible."),
         ("a", "Je le reproduis, c'est un bug de la dernière mise à jour."),
         ("c", "Et en attendant ?"),
         ("a", "L'application web fonctionne, et je transmets à l'équipe technique."),
         ("c", "D'accord. Rappelez-moi quand c'est réglé."),
         ("a", "Promis. Merci de votre patience.")),
        (0.10, 0.40, 0.50),
    ),
)

_DE = (
    _Scenario(
        ("Abrechnung", "Erstattung", "Rechnung"),
        "Der Kunde wurde für die Märzrechnung doppelt belastet. {agent} hat die doppelte Abbuchung bestätigt, "
        "die Erstattung veranlasst und fünf Werktage angekündigt.",
        ("Doppelte Abbuchung vom März erstatten", "Korrigierte Rechnung per E-Mail senden",
         "Weitere doppelte Abbuchungen prüfen"),
        (("a", "Guten Tag, wie kann ich Ihnen helfen?"),
         ("c", "Hallo, ich wurde im März zweimal belastet."),
         ("a", "Ich sehe mir Ihr Konto an. Ist Ihre E-Mail-Adresse noch aktuell?"),
         ("c", "Ja, die von der Anmeldung."),
         ("a", "Ich sehe zwei Zahlungen am dritten März."),
         ("c", "Können Sie eine davon erstatten?"),
         ("a", "Die Erstattung läuft, das dauert bis zu fünf Werktage."),
         ("c", "Und eine korrigierte Rechnung?"),
         ("a", "Die bekommen Sie heute per E-Mail."),
         ("c", "Super, vielen Dank. Tschüss.")),
        (0.55, 0.35, 0.10),
    ),
    _Scenario(
        ("technisches Problem", "Anmeldung", "Eskalation"),
        "Der Kunde kann sich seit dem letzten Update nicht mehr in der App anmelden. {agent} hat den Fehler "
        "nachgestellt und an das Technikteam weitergegeben.",
        ("Anmeldefehler an das Technikteam eskalieren", "Kunden mit einer Lösung zurückrufen",
         "Workaround für die Web-App senden"),
        (("c", "Hallo, ich kann mich seit gestern nicht mehr anmelden."),
         ("a", "Das tut mir leid. Welche Meldung sehen Sie?"),
         ("c", "Einen Fehler direkt nach dem Passwort."),
         ("a", "In der mobilen App oder im Browser?"),
         ("c", "In der App. Das ist wirklich ärgerlich."),
         ("a", "Ich kann es nachstellen, ein Fehler im letzten Update."),
         ("c", "Und was mache ich solange?"),
         ("a", "Die Web-App funktioniert, ich gebe es an das Technikteam weiter."),
         ("c", "Gut. Rufen Sie mich zurück, wenn es behoben ist."),
         ("a", "Mache ich. Danke für Ihre Geduld.")),
        (0.10, 0.40, 0.50),
    ),
)

_BANKS = {"en": _EN, "fr": _FR, "de": _DE}
_FILLERS = {
    "en": ("Okay.", "I see.", "Mm-hmm.", "Right.", "Let me check that for you.", "Yes, exactly."),
    "fr": ("D'accord.", "Je vois.", "Hm hm.", "Oui.", "Je vérifie.", "Exactement."),
    "de": ("Okay.", "Verstehe.", "Mhm.", "Genau.", "Ich schaue nach.", "Ja, richtig."),
}
_LANGUAGE = {"FR": "fr", "DE": "de"}


def language_for(country: str | None) -> str:
    """The transcription language of a line (its country's; English by default)."""
    return _LANGUAGE.get((country or "").upper(), "en")


@dataclass(frozen=True, slots=True)
class CallInsights:
    """Everything Aircall AI produced for one call (the five endpoints serve parts of it)."""

    language: str
    utterances: tuple[dict[str, Any], ...]
    summary: str
    topics: tuple[str, ...]
    sentiment: str
    action_items: tuple[str, ...]


def build_insights(seed: int, *, call_id: int, started_at: int, answered_at: int, ended_at: int,
                   country: str | None, agent_id: int | None, agent_name: str | None, external_phone: str,
                   action_items: int) -> CallInsights:
    """The insights of one answered call; ``action_items`` is how many it has (0 to 3)."""
    rng = random.Random(f"ai-content:{seed}:{call_id}")
    language = language_for(country)
    scenario = rng.choice(_BANKS[language])
    sentiment = rng.choices(SENTIMENTS, scenario.mood)[0]
    first_name = (agent_name or "The agent").split()[0]
    talk = max(1, ended_at - answered_at)
    offset = answered_at - started_at  # §3.2: utterance times count from the start of the call

    # About one utterance per 12 s of talk; the scenario's lines first, fillers in between
    # when the call is longer, the closing line always last.
    wanted = max(4, min(40, talk // 12))
    lines = list(scenario.dialogue)
    if wanted < len(lines):
        lines = lines[: wanted - 1] + lines[-1:]
    fillers = _FILLERS[language]
    while len(lines) < wanted:
        at = rng.randrange(1, len(lines))
        speaker = "c" if lines[at - 1][0] == "a" else "a"
        lines.insert(at, (speaker, rng.choice(fillers)))
    slot = talk / len(lines)
    utterances = []
    for k, (speaker, text) in enumerate(lines):
        start = offset + k * slot + rng.uniform(0, slot * 0.2)
        end = start + min(slot * 0.75, max(0.6, 0.35 * len(text.split())))
        u: dict[str, Any] = {"start_time": round(start, 2), "end_time": round(end, 2), "text": text}
        if speaker == "a":
            u["participant_type"] = "internal"
            u["user_id"] = agent_id
        else:
            u["participant_type"] = "external"
            u["phone_number"] = external_phone
        utterances.append(u)
    return CallInsights(
        language=language,
        utterances=tuple(utterances),
        summary=scenario.summary.format(agent=first_name),
        topics=scenario.topics[: rng.randint(2, len(scenario.topics))],
        sentiment=sentiment,
        action_items=scenario.actions[: max(0, min(action_items, len(scenario.actions)))],
    )
