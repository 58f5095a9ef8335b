"""A small, believable team memory for the browser tests and the README's screenshots.

What coding agents write over a few weeks on one product: people, services, tools, decisions
and incidents, related to each other, with the near-duplicates agents make ("PostgreSQL" and
"postgresql", "Node.js" and "nodejs", "Deploy checklist" and "deploy checklists").
"""

from __future__ import annotations

from memfts.models import Entity, Relation
from memfts.store import Store

ENTITIES: list[tuple[str, str, list[str]]] = [
    (
        "Maya Chen",
        "person",
        [
            "Tech lead of the payments team since March",
            "Prefers small pull requests, reviewed within a day",
            "Wrote the retry policy for the billing worker",
        ],
    ),
    (
        "Jonas Weber",
        "person",
        [
            "Backend engineer; on call for checkout in odd weeks",
            "Knows the history of the ledger schema",
        ],
    ),
    (
        "Priya Raman",
        "person",
        [
            "Frontend engineer, owns the checkout page",
            "Asked that error messages name the field that failed",
        ],
    ),
    ("Tom Okafor", "person", ["Runs the weekly incident review", "Maintains the deploy scripts"]),
    (
        "Lena Novak",
        "person",
        ["Product manager for billing", "Wants invoices in the customer's language"],
    ),
    ("Sam Ortiz", "person", ["Data engineer; owns the nightly exports"]),
    (
        "checkout-service",
        "service",
        [
            "Handles carts and payment intents; Python 3.12, Starlette",
            "Talks to billing-worker through the job queue",
            "Latency budget: p95 under 300 ms at the API gateway",
        ],
    ),
    (
        "billing-worker",
        "service",
        [
            "Turns payment events into invoices; retries with exponential backoff",
            "Idempotency key is the payment intent id",
            "Stalled twice in October when the queue filled up",
        ],
    ),
    (
        "ledger",
        "service",
        [
            "Double-entry ledger; every balance change is one transaction",
            "Schema changes need a migration and a backfill plan",
        ],
    ),
    ("api-gateway", "service", ["Routes /v2 traffic; rate limit 100 requests per second per key"]),
    ("notification-service", "service", ["Sends receipts and dunning emails"]),
    ("search-indexer", "service", ["Keeps the product search index fresh from change events"]),
    (
        "PostgreSQL",
        "database",
        [
            "Version 16 in production, 15 in the staging cluster",
            "Connection pool: 20 per service instance",
        ],
    ),
    ("postgresql", "tool", ["Use pg_dump --format=custom for backups"]),
    ("Redis", "database", ["Caches carts for 30 minutes", "Used as the job queue broker"]),
    ("Node.js", "tool", ["The checkout page builds with Node 20"]),
    ("nodejs", "technology", ["Pin the version in .nvmrc"]),
    ("Kubernetes", "tool", ["Production runs on three node pools", "Deploys through Argo CD"]),
    ("Argo CD", "tool", ["Syncs the cluster from the deploy repository"]),
    ("Grafana", "tool", ["Dashboards for checkout latency and queue depth"]),
    ("Sentry", "tool", ["Error tracking for checkout-service and the checkout page"]),
    ("Stripe", "vendor", ["Payment provider; webhooks signed with a rotating secret"]),
    (
        "Deploy checklist",
        "document",
        [
            "1. Migrations first, 2. then workers, 3. then web",
            "Never deploy on Friday after 15:00",
        ],
    ),
    ("deploy checklists", "document", ["Add a step: check the queue depth before deploying"]),
    (
        "ADR-012 Idempotent payments",
        "decision",
        [
            "Every payment call carries an idempotency key",
            "Duplicate webhooks are acknowledged and ignored",
        ],
    ),
    ("ADR-015 Queue per tenant", "decision", ["Rejected: too many queues to operate"]),
    (
        "ADR-017 Invoice language",
        "decision",
        ["Invoices use the customer's billing-address language"],
    ),
    (
        "INC-2041 Billing worker stalled",
        "incident",
        [
            "Queue filled up after a Redis failover; invoices were 3 hours late",
            "Fix: the worker now reconnects and drains the backlog",
        ],
    ),
    (
        "INC-2055 Double charge",
        "incident",
        [
            "A retried webhook charged 14 customers twice",
            "Root cause: idempotency key missing on one code path",
        ],
    ),
    ("INC-2060 Slow checkout", "incident", ["p95 rose to 1.2 s during the sale; pool exhausted"]),
    ("Payments team", "team", ["Owns checkout-service, billing-worker and ledger"]),
    ("Platform team", "team", ["Owns Kubernetes, Argo CD and the observability stack"]),
    (
        "Q4 billing revamp",
        "project",
        [
            "Goal: invoices in 12 languages and self-service refunds",
            "Due before the end of the quarter",
        ],
    ),
    (
        "Self-service refunds",
        "feature",
        ["Customers can refund within 14 days from the account page"],
    ),
    ("Invoice PDF", "feature", ["Rendered by billing-worker; fonts bundled for CJK"]),
    ("Retry policy", "concept", ["Exponential backoff with jitter, at most 8 attempts"]),
    ("Idempotency key", "concept", ["Same key, same result: the second call changes nothing"]),
    ("Code review", "practice", ["Two approvals for anything touching the ledger"]),
    ("On-call rotation", "practice", ["Weekly; handover on Monday at 10:00"]),
    ("Python style", "preference", ["ruff and mypy --strict on every pull request"]),
]
"""(name, type, observations) in the order agents wrote them."""

RELATIONS: list[tuple[str, str, str]] = [
    ("Maya Chen", "Payments team", "leads"),
    ("Jonas Weber", "Payments team", "member_of"),
    ("Priya Raman", "Payments team", "member_of"),
    ("Tom Okafor", "Platform team", "member_of"),
    ("Lena Novak", "Q4 billing revamp", "owns"),
    ("Sam Ortiz", "PostgreSQL", "maintains"),
    ("Payments team", "checkout-service", "owns"),
    ("Payments team", "billing-worker", "owns"),
    ("Payments team", "ledger", "owns"),
    ("Platform team", "Kubernetes", "owns"),
    ("Platform team", "Argo CD", "owns"),
    ("Platform team", "Grafana", "owns"),
    ("checkout-service", "billing-worker", "sends_jobs_to"),
    ("checkout-service", "Redis", "uses"),
    ("checkout-service", "PostgreSQL", "uses"),
    ("checkout-service", "Stripe", "calls"),
    ("checkout-service", "api-gateway", "behind"),
    ("billing-worker", "ledger", "writes_to"),
    ("billing-worker", "Redis", "uses"),
    ("billing-worker", "notification-service", "notifies"),
    ("billing-worker", "Invoice PDF", "renders"),
    ("ledger", "postgresql", "stored_in"),
    ("search-indexer", "PostgreSQL", "reads"),
    ("Kubernetes", "checkout-service", "runs"),
    ("Kubernetes", "billing-worker", "runs"),
    ("Argo CD", "Kubernetes", "deploys_to"),
    ("Grafana", "checkout-service", "monitors"),
    ("Sentry", "checkout-service", "monitors"),
    ("Priya Raman", "Node.js", "uses"),
    ("Priya Raman", "nodejs", "prefers"),
    ("Tom Okafor", "Deploy checklist", "maintains"),
    ("Tom Okafor", "deploy checklists", "edited"),
    ("Tom Okafor", "On-call rotation", "runs"),
    ("Jonas Weber", "On-call rotation", "member_of"),
    ("Maya Chen", "Retry policy", "wrote"),
    ("Maya Chen", "ADR-012 Idempotent payments", "authored"),
    ("ADR-012 Idempotent payments", "Idempotency key", "introduces"),
    ("ADR-012 Idempotent payments", "checkout-service", "applies_to"),
    ("ADR-015 Queue per tenant", "billing-worker", "applies_to"),
    ("ADR-017 Invoice language", "Invoice PDF", "applies_to"),
    ("Lena Novak", "ADR-017 Invoice language", "requested"),
    ("INC-2041 Billing worker stalled", "billing-worker", "affected"),
    ("INC-2041 Billing worker stalled", "Redis", "caused_by"),
    ("INC-2055 Double charge", "checkout-service", "affected"),
    ("INC-2055 Double charge", "Idempotency key", "caused_by"),
    ("INC-2055 Double charge", "Stripe", "involved"),
    ("INC-2060 Slow checkout", "checkout-service", "affected"),
    ("INC-2060 Slow checkout", "PostgreSQL", "caused_by"),
    ("Tom Okafor", "INC-2041 Billing worker stalled", "reviewed"),
    ("Jonas Weber", "INC-2055 Double charge", "fixed"),
    ("Q4 billing revamp", "Self-service refunds", "includes"),
    ("Q4 billing revamp", "Invoice PDF", "includes"),
    ("Q4 billing revamp", "billing-worker", "changes"),
    ("Self-service refunds", "ledger", "writes_to"),
    ("Code review", "ledger", "guards"),
    ("Python style", "checkout-service", "applies_to"),
    ("billing-worker", "Retry policy", "follows"),
    ("Sentry", "Slack #payments", "alerts"),
]


def fill(store: Store) -> None:
    """Write the demo memory as agents would, one call per kind."""
    store.create_entities(
        [Entity(name=n, entityType=t, observations=list(o)) for n, t, o in ENTITIES]
    )
    store.create_relations([Relation(from_=f, to=t, relationType=r) for f, t, r in RELATIONS])
