"""The old rule router (keyword and pattern table), kept only to compare with the learned router.

bench/route_eval.py scores both on the same held-out prompts. Not used by the app.

The Auto router: pick the cheap or the flagship tier for one message.

Pure Python on purpose: it runs before every Auto reply, so it must cost
nothing next to the model call (no Django, no I/O, no model of its own).

The rule is PRODUCT.md's "When the cheap tier is enough": explanation, nuance
or multi-step reasoning go to the flagship; pattern recognition,
categorisation and templated output go to the cheap tier. A message is scored
against a table of weighted signals; a total at or above FLAGSHIP_THRESHOLD
picks the flagship. Every signal carries its reason, and the decision reports
the strongest signal on the winning side, so a user can see why Auto chose.

A wrong "cheap" costs a worse answer; a wrong "flagship" costs ~15x the
tokens. With nothing to go on, a short message stays cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CHEAP = "cheap"
FLAGSHIP = "flagship"

# A total score at or above this picks the flagship. One strong hard-task
# signal (a stack trace, a proof, a chapter) reaches it alone; two weaker ones
# (an error line and a "why") reach it together.
FLAGSHIP_THRESHOLD = 2.0

# Long pastes: task signals are read only from the first and last paragraph
# (capped), where people put the request; the body of a pasted document
# mentions captions, taxes or help centres without asking for them.
REQUEST_WINDOW_FROM = 1_200
REQUEST_HEAD = 600
REQUEST_TAIL = 400

# Sizes (in characters, ~4 per token) at which a message is a long document:
# about 250, 700 and 1,400 words. History counts towards the document, since
# a follow-up can ask to synthesise what was pasted earlier.
LONG_DOC_CHARS = 1_500
VERY_LONG_DOC_CHARS = 4_000
HUGE_DOC_CHARS = 8_000
LONG_HISTORY_CHARS = 20_000

# Structural signals (stack traces, code) are read from the whole message up
# to HUGE_DOC_CHARS, then from its head and tail only, so a 100K-character
# paste still decides in under a millisecond. Past that size length alone
# reaches the flagship threshold, so a trace the window misses changes the
# reason, rarely the tier.
SCAN_HEAD = 6_000
SCAN_TAIL = HUGE_DOC_CHARS - SCAN_HEAD

# "When unsure and short, cheap": below this a message with no signal either
# way stays cheap; at or above it, a request no cheap signal claims leans
# flagship (one more weak signal tips it), since templated work names itself
# (reply, caption, translate, classify) and what is left over at this length
# is mostly open-ended.
UNSURE_LONG_CHARS = 160
# A lookup-shaped question longer than this is usually asking for more.
FACTUAL_MAX_CHARS = 120

# "1,200 words" or "a 2,000-word story" asks for long output; "under 40
# words" asks for templated output.
LONG_OUTPUT_WORDS = 400
SHORT_OUTPUT_WORDS = 80


@dataclass(frozen=True)
class RouteDecision:
    tier: str  # "cheap" | "flagship"
    reason: str  # one short line, shown to the user


@dataclass(frozen=True)
class Signal:
    """One row of the table: fires if any word, phrase or pattern matches.

    Words are whole lowercase tokens, phrases are lowercase substrings (so a
    stem like "summar" covers summary/summarise), patterns are for what needs
    structure. Set lookups and substring tests keep a decision around a tenth
    of a millisecond; patterns are few, and most open with a literal that
    `re` can skip ahead to.
    """

    name: str
    weight: float  # > 0 leans flagship, < 0 leans cheap, 0 feeds a combination
    reason: str
    words: frozenset[str] = frozenset()
    phrases: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = field(default=())

    def fires(self, text: str, words: set[str]) -> bool:
        return (
            not self.words.isdisjoint(words)
            or any(map(text.__contains__, self.phrases))
            or any(p.search(text) for p in self.patterns)
        )


def _words(*items: str) -> frozenset[str]:
    return frozenset(items)


def _patterns(*regexes: str, flags: int = 0) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(r, flags) for r in regexes)


# Read from the original text (case matters: "Error:" is a log, "error" is a
# word), over the whole message: a crash dump is evidence wherever it sits.
# The scanned text starts with a newline, and frames and code lines start a
# line, so these patterns open with a literal "\n" that `re` can skip to.
STRUCTURE_SIGNALS: tuple[Signal, ...] = (
    Signal(
        "stack_trace",
        4.0,
        "stack trace or crash dump",
        phrases=(
            "Traceback (most recent call last)",
            'Exception in thread "',
            "panicked at",  # Rust
            "RUST_BACKTRACE",
            "SIGSEGV",
            "egmentation fault",
            "egmentation violation",
            "core dumped",
            "fatal error: ",  # Go runtime, C compilers
            "fatal runtime error",  # Rust
            "overflowed its stack",
        ),
        patterns=_patterns(
            r'File "[^"\n]+", line \d+',  # Python frame
            r"\n[ \t]*at [\w$.<>/]+\([\w$]+\.(?:java|kt|scala):\d+\)",  # JVM frame
            r"\n[ \t]*at [^\n(]*\([^\n)]*\.[cm]?[jt]sx?:\d+:\d+\)",  # JS frame
            r"\n[ \t]*at [^\s()]+\.[cm]?[jt]sx?:\d+:\d+",  # JS frame, anonymous
            r"goroutine \d+ \[",  # Go dump
            r"\npanic: ",
        ),
    ),
    Signal(
        "error_line",
        2.0,
        "error message",
        # An exception name with its message: a bug report even without frames.
        phrases=("Error:", "Exception:", "Error\n", "Exception\n", "Uncaught "),
    ),
    Signal(
        "code",
        0.0,  # neutral alone: pasted code is as often boilerplate as a bug
        "code",
        phrases=("```", "=> {", "=> (", ") {\n", "){\n", "};"),
        patterns=_patterns(
            r"\n[ \t]*(?:def|class|func|fn|function|import|const|let|var|public|"
            r"private|int|void|struct|CREATE TABLE|SELECT)\b[^\n]*[:({=;]"
        ),
    ),
)

LANGUAGES = (
    "english", "spanish", "french", "german", "italian", "dutch", "polish",
    "portuguese", "japanese", "chinese", "korean", "arabic", "swedish",
    "norwegian", "danish", "finnish", "turkish", "greek", "hindi", "russian",
    "ukrainian", "czech", "hebrew", "vietnamese", "thai", "indonesian",
)  # fmt: skip

# Read from the lowercased request window: what the person asks for.
TASK_SIGNALS: tuple[Signal, ...] = (
    # --- flagship: debugging (races, distributed failures, undefined behaviour)
    Signal(
        "hard_bug",
        3.0,
        "intermittent or concurrency bug",
        words=_words(
            "deadlock", "deadlocks", "deadlocked", "leak", "leaks", "leaking",
            "oom", "valgrind", "intermittent", "intermittently", "flaky",
            "occasionally", "heisenbug", "randomly", "hangs", "hanging",
        ),
        phrases=(
            "race condition", "data race", "memory leak", "memory keeps growing",
            "undefined behaviour", "undefined behavior", "-o0", "-o2", "-o3",
            "only in prod", "only happens in prod", "under load",
            "works locally", "works fine locally", "after a rebalance",
            "sometimes both", "sometimes fails", "sometimes crashes",
            "double booking", "double-booking", "same job", "two workers",
            "double charge", "release build", "but works on", "hang forever",
            "no pattern", "can't reproduce", "cannot reproduce", "only sometimes",
            "exc_bad_access", "run twice", "runs twice", "exactly once",
        ),
    ),
    Signal(
        "debug_question",
        2.5,
        "debugging question",
        phrases=(
            "what's going on", "what is going on", "any idea why", "can't see why",
            "cannot see why", "can't figure out why", "infinite loop",
            "keeps crashing", "keeps failing", "blows up", "debug", "track down",
            "which it is", "it worked yesterday", "stopped working",
            "how do i fix", "how do we fix", "fix it properly", "what could cause",
            "what's happening here", "where do i start", "how do i prevent",
            "how do we prevent", "just sits there", "no error", "what's the bug",
            "crashes on", "how should i approach",
            "what am i missing", "make this safe",
        ),
        patterns=_patterns(
            r"why (?:does|do|did|is|isn't|doesn't|won't|would)\b[^.?!\n]{0,60}"
            r"(?:fail|crash|break|happen|hang|loop|wrong|work|enough|error|block)",
        ),
    ),
    # --- flagship: architecture planning and review
    Signal(
        "architecture",
        2.5,
        "architecture or design review",
        words=_words(
            "architecture", "schema", "microservice", "microservices",
            "monolith", "idempotent", "idempotency", "replica", "replicas",
            "p99", "shard", "shards", "sharded", "sharding", "concurrent",
            "fan-out", "websockets", "throughput", "multi-region", "jwt",
            "oauth", "revoked",
        ),
        phrases=(
            "system design", "our design", "my design", "pub/sub",
            "eventual consistency", "strong consistency", "consistency matters",
            "our latency", "tail latency", "latency budget", "p99 latency",
            "event sourcing", "multi-tenant", "queue per tenant",
            "single point of failure", "failure mode", "primary store",
            "we're designing", "concurrent users", "message ordering",
            "load balancer", "own database", "service boundaries",
            "what do we give up", "auth flow", "security of our",
            "security of my", "setting ourselves up", "migration plan",
            "plan the migration", "row-level security",
        ),
        patterns=_patterns(
            r"\dx (?:traffic|growth|load|scale)",
            r"(?:move|moving|migrat\w*) from \w+ to \w+",
            r"design (?:the|a|an|our) [^\n]{0,30}\b(?:database|system|service|"
            r"backend|api|architecture|schema|platform)",
        ),
    ),
    Signal(
        "review_request",
        1.5,
        "review request",
        words=_words("critique"),
        phrases=(
            "review this", "review my", "review our", "review the",
            "code review", "what's wrong with", "point out problems",
            "where it breaks", "breaks at", "bad idea", "good idea",
            "what happens if", "is it a mistake", "is this reasonable",
        ),
    ),
    # --- flagship: multi-step reasoning (tax, legal, financial modelling, proofs)
    Signal(
        "tax",
        # Weaker than the others: "VAT" and "tax" also turn up in templated
        # replies ("all prices include VAT"), which their own signals outweigh.
        2.0,
        "tax reasoning",
        words=_words(
            "tax", "taxes", "vat", "hmrc", "irs", "rsu", "rsus", "deduction",
            "deductions", "roth", "taxed", "taxable",
        ),
        phrases=(
            "reverse-charge", "reverse charge", "national insurance",
            "capital gains", "file jointly", "file separately", "401(k)",
            "rent-a-room", "sole trader", "stock options",
        ),
    ),
    Signal(
        "legal",
        2.5,
        "legal reasoning",
        words=_words(
            "enforceable", "non-compete", "clause", "clauses", "liability",
            "lawsuit", "sue", "tenancy", "ast", "gdpr", "indemnify",
            "indemnification", "misclassified", "liable", "consent",
            "agreement", "custody", "courts",
        ),
        phrases=(
            "my case", "in court", "the court", "deposit was protected",
            "this contract", "my contract",
            "our contract", "the contract", "employment contract",
            "entitled to", "my rights", "unfair dismissal", "employment law",
        ),
        patterns=_patterns(
            # "Can my landlord keep...", "Could our employer refuse...": rights
            # between parties, which turn on jurisdiction and wording.
            r"(?:can|could) (?:my|our|the) (?:landlord|employer|partner|"
            r"business partner|boss|ex|tenant|neighbou?r|company|bank)\b",
        ),
    ),
    Signal(
        "finance_model",
        3.0,
        "financial modelling",
        words=_words(
            "npv", "irr", "mortgage", "runway", "valuation", "cac", "ltv",
            "churn", "roi", "payback", "depreciation",
        ),
        phrases=(
            "financial model", "break-even", "break even", "breaks even",
            "amortis", "amortiz", "liquidation preference", "pre-money",
            "cap table", "discount rate", "index fund", "term sheet",
            "cost of capital", "residual value", "lease or buy",
        ),
    ),
    Signal(
        "proof",
        3.0,
        "mathematical proof",
        words=_words(
            "prove", "proof", "theorem", "lemma", "irrational", "derive",
            "generalise", "generalize",
        ),
        phrases=("by induction", "infinitely many"),
        patterns=_patterns(
            r"show that [^\n]{0,80}\b(?:prime|integer|every|all|divisible|converge)"
        ),
    ),
    Signal(
        "reasoning_ask",
        1.5,
        "multi-step reasoning",
        words=_words("calculate", "compute"),
        phrases=(
            "step by step", "walk me through", "work through", "work out",
            "model both", "what are my options", "what are our options",
            "how strong", "how do we sequence", "how do we deal with",
            "show the math", "show your working", "better off", "minimise",
            "minimize", "optimise", "optimize", "allocate", "think through",
        ),
        patterns=_patterns(
            r"should (?:i|we)\b[^\n]{0,80}\bor\b", r"what do we \w+ first"
        ),
    ),
    # --- flagship: explanation and nuance
    Signal(
        "explanation",
        2.5,
        "explanation or nuance",
        phrases=(
            "explain", "trade-off", "tradeoff", "trade off", "pros and cons",
            "nuance", "help me understand", "i don't get why",
            "real difference", "competing explanations", "gain and lose",
            "intuition", "how to think about", "talk me through", "why it works",
            "what does the research", "is it better to", "for and against",
            "each side", "both sides", "strongest version", "steelman",
            "opposite claims", "safer than", "when would each", "how the numbers",
        ),
        patterns=_patterns(
            r"why (?:do|does|did|is|are|was|would)\b",
            r"why\b[^\n]{0,40}\?",
            r"how does\b[^\n]{0,60}\b(?:work|decide|protect)",
        ),
    ),
    # --- flagship: long-form or nuanced creative writing where a voice must hold
    Signal(
        "creative_longform",
        3.0,
        "long-form creative writing",
        words=_words("chapter", "screenplay", "scene", "eulogy", "narrator"),
        phrases=(
            "my novel", "a novel", "the novel", "a speech", "wedding speech",
            "speech for", "short story", "bedtime story", "one-act", "monologue",
            "subtext", "stanza", "poem draft", "imagery", "in the style of",
            "my voice", "same voice", "her voice", "his voice", "our voice",
            "continue this story",
            "continue the story", "continue this chapter", "personal essay",
            "long-form",
        ),
        patterns=_patterns(
            r"(?:same|keep my|in my) [a-z ,]{0,30}\b(?:voice|tone|rhythm|style|pacing)",
            r"\d+-minute (?:story|speech|talk|play|script)",
            r"continues? the (?:adventures|story|series)",
        ),
    ),
    # --- flagship: structured extraction from ambiguous, messy input
    Signal(
        "messy_input",
        2.0,
        "messy or ambiguous input",
        words=_words(
            "ocr", "ocr'd", "garbled", "messy", "inconsistent", "ambiguous",
            "unclear", "handwritten",
        ),
        phrases=(
            "all over the place", "mixed format", "in mixed", "columns got mixed",
            "pasted from a pdf", "group chat", "chat log", "free-text",
            "free text", "rather than guessing", "flag those", "flag them",
            "flag anything", "transcript", "is rough", "missing parts",
            "wrong order", "people typed", "typed into", "free-form", "freeform",
            "different styles", "whatsapp thread", "whatsapp chat", "order thread",
        ),
    ),
    Signal(
        "extraction",
        1.0,
        "structured extraction",
        words=_words("extract", "parse", "normalise", "normalize"),
        phrases=(
            "into json", "into a table", "into csv", "give me json", "make a table",
            "split them into", "split into", "structured fields", "into structured",
            "build a table",
        ),
        patterns=_patterns(r"pull [^\n]{0,40}\bout\b", r"fill in [^\n]{0,40}\bfields"),
    ),
    # --- flagship when long: synthesis across documents (weighted by size below)
    Signal(
        "synthesis_ask",
        0.0,
        "synthesis request",
        words=_words(
            "synthesise", "synthesize", "compare", "reconcile", "across",
            "themes", "interact", "critique",
        ),
        phrases=(
            "contradict", "disagree", "conflict", "pull together",
            "read all of it", "read the whole thing", "material change",
            "main arguments", "push back", "what's changed", "what changed",
            "between them", "show up in", "collectively", "how much weight",
        ),
        patterns=_patterns(r"how [^\n]{0,40}\bchanged"),
    ),
    # --- cheap when short: summaries and bullets (weighted by size below)
    Signal(
        "summary_ask",
        0.0,
        "summary request",
        phrases=(
            "summar", "tl;dr", "tldr", "bullet", "key points", "one-line",
            "shorten", "in one sentence", "in two sentences", "in 1 sentence",
            "in 2 sentences", "in 3 sentences",
        ),
    ),
    # --- cheap: classification, tagging, sentiment, spam, intent
    Signal(
        "classification",
        -3.0,
        "classification or tagging",
        words=_words(
            "classify", "categorize", "categorise", "label", "sentiment",
            "spam", "intent", "toxic",
        ),
        phrases=(
            "tag this", "tag these", "tag each", "topic tags", "fake or genuine",
            "priority from", "which department", "which category", "which team",
            "positive, negative", "pos/neg", "sort these", "urgent / not urgent",
            "seniority level", "detect the language", "a complaint, a question",
            "phishing", "rate how", "which of these", "are these", "flag which",
            "say if it's", "group these",
        ),
    ),
    # --- cheap: FAQ and templated support replies
    Signal(
        "support_template",
        -3.0,
        "templated support reply",
        words=_words(
            "faq", "canned", "template", "templates", "macro", "auto-reply",
        ),
        phrases=(
            "standard reply", "standard support reply", "support reply",
            "reply to this ticket", "reply to this customer",
            "respond to this review", "respond to this google review",
            "respond to this customer", "customer asks", "a user wrote",
            "a customer wrote", "first reply", "support inbox", "write a reply",
            "write the reply", "usual reply", "reply to a customer",
            "reply for people", "reply for customers", "our answer to",
            "help-centre", "help centre", "help center", "standard answer",
            "customer wants to know",
        ),
    ),
    # --- cheap: basic code completion and boilerplate (not debugging)
    Signal(
        "boilerplate",
        -3.0,
        "code boilerplate",
        words=_words(
            "boilerplate", "snippet", "regex", "one-liner", "dockerfile",
            "struct", "scaffold",
        ),
        phrases=(
            "complete this", "sql query", "interface for", "list comprehension",
            "css class", "dataclass", "github actions", "cron expression",
            "gitignore", "html page", "react component", "type hints",
        ),
        patterns=_patterns(
            r"how do i \w+ (?:a|an|the) [\w ]{0,30}\bin (?:python|javascript|js|"
            r"typescript|go|java|rust|sql|bash|excel)\b",
            r"write an? (?:\w+ ){0,2}function that",
            r"write an? (?:\w+ )?test for",
            r"give me an? (?:\w+ )?model for",
        ),
    ),
    # --- cheap: short emails, captions, subject lines
    Signal(
        "short_copy",
        -3.0,
        "short copy",
        words=_words(
            "caption", "captions", "tweet", "tagline", "slogan", "headline",
            "headlines", "hashtag", "hashtags", "instagram", "tiktok",
        ),
        phrases=(
            "subject line", "short email", "quick email", "linkedin post",
            "product description", "out-of-office", "out of office",
            "title ideas", "thank-you note", "thank you note", "announcement",
            "bio for", "meta description", "ad copy", "push notification",
            "text message", "slack message", "birthday message", "names for",
            "welcome email", "apology email",
        ),
    ),
    # --- cheap: simple translation
    Signal(
        "translation",
        -3.0,
        "simple translation",
        phrases=("translat", "how do you say", "how do you write", "how would i write")
        + tuple(f"to {lang}" for lang in LANGUAGES)  # also covers "into ..."
        + tuple(f"{lang} please" for lang in LANGUAGES),
        patterns=_patterns(
            r"what does '[^'\n]+' mean",
            # "in Spanish for a sign", "in Japanese?", not "customers in Germany"
            rf"in (?:{'|'.join(LANGUAGES)})(?: for\b|\s*[:?])",
        ),
    ),
)  # fmt: skip

_SIGNAL_NAMES = {s.name for s in STRUCTURE_SIGNALS + TASK_SIGNALS}
assert len(_SIGNAL_NAMES) == len(STRUCTURE_SIGNALS) + len(TASK_SIGNALS)

TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
# A short question that opens like a lookup: a fact, not an argument.
FACTUAL_QUESTION = re.compile(
    r"(?:what(?:'s| is| are| year| port| does)?|who|when|where|which|"
    r"how (?:many|much|old|far|long))\b"
)
# A question carrying many figures is a word problem: several steps of
# arithmetic where a cheap model tends to drop one.
FIGURE = re.compile(r"\d[\d,.]*")
MANY_FIGURES = 5
WORD_COUNT = re.compile(r"(\d{1,2},\d{3}|\d+)\s*-?\s*words?\b")
CONTINUATION = re.compile(r"continue\b|keep going\b|next (?:chapter|scene|part)\b")


def _request_window(content: str) -> str:
    if len(content) <= REQUEST_WINDOW_FROM:
        return content
    head = content[:REQUEST_HEAD]
    tail = content[-REQUEST_TAIL:]
    head = head.split("\n\n", 1)[0]
    tail = tail.rsplit("\n\n", 1)[-1]
    return head + "\n" + tail


def _scan_window(content: str) -> str:
    if len(content) <= SCAN_HEAD + SCAN_TAIL:
        return content
    return content[:SCAN_HEAD] + "\n" + content[-SCAN_TAIL:]


def _requested_words(request: str) -> int | None:
    match = WORD_COUNT.search(request)
    return None if match is None else int(match.group(1).replace(",", ""))


def route_decide(
    *,
    content: str,
    history_chars: int = 0,
    history_messages: int = 0,
    has_code_history: bool = False,
) -> RouteDecision:
    """Decide the tier for one user message in its conversation."""
    scan = "\n" + _scan_window(content)
    request = _request_window(content).lower().replace("\u2019", "'")
    tokens = set(TOKEN.findall(request))
    fired: set[str] = set()
    hits: list[tuple[float, str]] = []  # (weight, reason) of each signal counted

    for signal in STRUCTURE_SIGNALS:
        if signal.fires(scan, set()):
            fired.add(signal.name)
            hits.append((signal.weight, signal.reason))
    for signal in TASK_SIGNALS:
        if signal.fires(request, tokens):
            fired.add(signal.name)
            hits.append((signal.weight, signal.reason))

    # Combinations mean more than their parts; they carry the largest weight
    # so that their reason is the one reported.
    crashed = bool(fired & {"stack_trace", "error_line", "hard_bug"})
    if "debug_question" in fired and fired & {"stack_trace", "error_line"}:
        hits.append((4.5, "stack trace with a debugging question"))
    elif "debug_question" in fired and ("code" in fired or has_code_history):
        hits.append((3.0, "code with a debugging question"))
    if "messy_input" in fired and "extraction" in fired:
        hits.append((3.0, "structured extraction from messy input"))
    if "review_request" in fired and "code" in fired:
        hits.append((1.0, "code review"))
    if crashed and "boilerplate" in fired:
        # Code pasted next to a crash is the thing to debug, not boilerplate.
        hits.remove((-3.0, "code boilerplate"))

    size = len(content)
    document = size + history_chars
    if "synthesis_ask" in fired:
        if document >= LONG_DOC_CHARS:
            hits.append((3.0, "long document synthesis"))
        else:
            hits.append((1.0, "comparison request"))
    if "summary_ask" in fired:
        if document >= VERY_LONG_DOC_CHARS:
            hits.append((2.5, "long document summary"))
        elif size < LONG_DOC_CHARS and history_chars < LONG_HISTORY_CHARS:
            hits.append((-2.0, "short summary"))
    if size >= LONG_DOC_CHARS and "?" in request:
        # An open question about a long paste asks for reading across it.
        hits.append((2.0, "question about a long document"))
    # Length alone is weak evidence (people paste a log to ask one thing), but
    # a very long message rarely wants a templated answer.
    if size >= HUGE_DOC_CHARS:
        hits.append((2.0, "very long message"))
    elif size >= VERY_LONG_DOC_CHARS:
        hits.append((1.0, "long message"))

    if "?" in request and len(FIGURE.findall(request)) >= MANY_FIGURES:
        hits.append((1.5, "calculation with several figures"))

    words = _requested_words(request)
    if words is not None and words >= LONG_OUTPUT_WORDS:
        hits.append((2.0, "long-form output requested"))
    elif words is not None and words <= SHORT_OUTPUT_WORDS:
        hits.append((-1.0, "short output requested"))

    # Continuing a long piece of writing keeps its voice on the model that
    # set it; a long conversation tips a borderline message, nothing more.
    if history_chars >= LONG_HISTORY_CHARS // 2 and CONTINUATION.search(request):
        hits.append((2.5, "continuing long-form writing"))
    if history_messages >= 20 and history_chars >= LONG_HISTORY_CHARS:
        hits.append((0.5, "long conversation"))

    if size >= UNSURE_LONG_CHARS and not any(w < 0 for w, _ in hits):
        hits.append((1.5, "open-ended request"))
    if size <= FACTUAL_MAX_CHARS and FACTUAL_QUESTION.match(request.lstrip()) and not any(w > 0 for w, _ in hits):
        hits.append((-2.0, "short factual question"))

    score = sum(w for w, _ in hits)
    if score >= FLAGSHIP_THRESHOLD:
        _, reason = max((h for h in hits if h[0] > 0), key=lambda h: h[0])
        return RouteDecision(FLAGSHIP, reason)
    cheap = [h for h in hits if h[0] < 0]
    if cheap:
        _, reason = min(cheap, key=lambda h: h[0])
        return RouteDecision(CHEAP, reason)
    if size < UNSURE_LONG_CHARS:
        return RouteDecision(CHEAP, "short message, no hard-task signals")
    return RouteDecision(CHEAP, "no hard-task signals")
