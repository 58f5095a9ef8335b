"""A relevance test set for ``search_nodes``: a realistic agent memory, queries, known answers.

The corpus is what coding agents actually store in the official memory server: people, services,
libraries, decisions (ADRs), bugs, incidents, meetings, config facts and projects, written the way
an agent writes observations ("Uses PostgreSQL 15 for invoices", "Deploy fails when REDIS_URL is
unset"), about a tenth of it in Japanese and Chinese and some with accented names. It is built
from templates and vocabularies with one fixed seed, plus hand-written entities, so every run
sees the same ~3,000 entities.

The queries are drawn from the corpus itself, each with the set of entities that are its correct
answer, computed independently of the code under test:

``known_item``  2-4 words of one entity (name and observations), shuffled; exactly one entity
                holds them all as whole words.
``partial``     a word start or a piece inside a word (>= 3 letters) that is not itself a word
                anywhere in the corpus (``auth`` -> ``authentication``), alone or with one whole
                word of the entity.
``cjk``         1-4 characters cut from a longer Japanese or Chinese run (CJK has no spaces, so a
                run is one token to ``unicode61``), alone or with a second such piece.
``accent``      an accented word typed without accents or in another case (``cafe muller``).
``typo``        one edit (deletion, insertion, substitution, transposition) in a distinctive
                word (``kuberentes``), alone or with one correct word.
``phrase``      ``"adjacent words"`` in double quotes that occur in that order in one entity
                only, while several other entities hold the same words apart or reordered.

Metrics: the rank of the first correct entity in ``search_nodes(q, limit=10).entities``; hit@1,
hit@10 and MRR (reciprocal rank, 0 past 10) per class, per sub-class and overall.

Importable by ``tests/test_relevance.py`` and ``bench/relevance.py``; no network, no randomness
left after the seed (sets are sorted before any random choice, so ``PYTHONHASHSEED`` is moot).
"""

from __future__ import annotations

import random
import re
import statistics
import time
import unicodedata
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import apsw

from memfts.models import Entity, Relation

SEED = 20261124
LIMIT = 10
"""Results looked at per query: hit@10 and MRR@10."""

CLASSES = ("known_item", "partial", "cjk", "accent", "typo", "phrase")
QUOTAS = {"known_item": 200, "partial": 70, "cjk": 60, "accent": 40, "typo": 50, "phrase": 40}


# ---- vocabularies ----------------------------------------------------------------------------


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _split(
    """Alice Bob Carol David Emma Farid Grace Hiro Ines James Kenji Laura Mateo Nadia
Omar Priya Quentin Rosa Sven Tara Umar Vera Wei Xavier Yuki Zara Aaron Beatriz Chen Dmitri Elena
Fatima Gustavo Hannah Ivan Julia Karim Lena Marco Nina Oscar Paula Rahul Sofia Tomas Ursula
Victor Wanda Yusuf Zoe Amir Bianca Carlos Diana Erik Freya Georg Helga Igor Jana"""
)
LAST_NAMES = _split(
    """Chen Smith Garcia Nakamura Kowalski Okafor Patel Rossi Schmidt Dubois Ivanova
Johansson Kim Lopez Novak Brien Park Quinn Reyes Silva Tanaka Urban Vargas Wong Yilmaz Zhang
Andersen Becker Costa Dalton Eriksson Fischer Gupta Haddad Ito Jensen Khan Larsen Moreau Nguyen
Olsen Petrov Ramos Sato Torres Ueda Vogel Weber Xu Young Ziegler Abbott Brennan Castillo Doyle
Evans Flores Grant Hughes"""
)
DOMAINS = _split(
    """billing auth payments search notifications inventory shipping checkout analytics
reporting profile session email sms media upload thumbnail recommendation pricing catalog order
invoice ledger fraud risk audit metrics gateway identity onboarding scheduler export geo
translation chat feed ads loyalty refund subscription wallet kyc compliance tax warehouse
routing tracking review rating wishlist coupon"""
)
SERVICE_SUFFIXES = (
    "service",
    "api",
    "worker",
    "consumer",
    "cron",
    "proxy",
    "frontend",
    "dashboard",
)
DATABASES = (
    ("PostgreSQL", ("13", "14", "15", "16")),
    ("MySQL", ("5.7", "8.0")),
    ("Redis", ("6", "7")),
    ("MongoDB", ("5", "6", "7")),
    ("Cassandra", ("3.11", "4.1")),
    ("DynamoDB", ("",)),
    ("SQLite", ("3.45",)),
    ("Elasticsearch", ("7", "8")),
    ("ClickHouse", ("23", "24")),
    ("CockroachDB", ("23.2",)),
    ("MariaDB", ("10.11", "11")),
    ("OpenSearch", ("2",)),
)
QUEUES = ("Kafka", "RabbitMQ", "SQS", "NATS", "Pulsar", "Redis Streams", "Kinesis")
LANGUAGES = (
    ("Python", ("3.10", "3.11", "3.12")),
    ("Go", ("1.21", "1.22")),
    ("TypeScript", ("5.3", "5.4")),
    ("Rust", ("1.77", "1.78")),
    ("Java", ("17", "21")),
    ("Kotlin", ("1.9", "2.0")),
    ("Ruby", ("3.2", "3.3")),
    ("Elixir", ("1.16",)),
    ("JavaScript", ("ES2022",)),
    ("Scala", ("3.4",)),
)
PLATFORMS = ("Kubernetes", "ECS", "Nomad", "Heroku", "Fly.io", "Cloud Run", "Lambda", "OpenShift")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1", "sa-east-1")
LIBRARIES = _split(
    """SQLAlchemy Pydantic FastAPI Django Flask Celery Alembic pytest Hypothesis mypy
Ruff Black requests httpx aiohttp uvicorn gunicorn structlog Sentry OpenTelemetry Prometheus
Grafana Express NestJS Prisma TypeORM Zod Vitest Jest Playwright Cypress Webpack Vite esbuild
React Redux Tailwind Svelte Nextjs Axios Lodash Moment Dayjs Tokio Axum Serde Diesel Actix
Hyper Clap Anyhow Tracing Gin Echo Cobra Viper Testify Zap GORM Sqlx Spring Hibernate Lombok
Jackson Guava Mockito JUnit Gradle Maven Ktor Exposed Rails Sidekiq RSpec Devise Puma Phoenix
Ecto Oban Terraform Pulumi Ansible Helm ArgoCD Flux Istio Linkerd Envoy Traefik Nginx Caddy
Vault Consul Keycloak Auth0 Okta Stripe Twilio SendGrid Mailgun Segment Amplitude Mixpanel
LaunchDarkly Unleash Flagsmith Temporal Airflow Dagster Prefect dbt Spark Flink Debezium
Snowflake BigQuery Redshift Metabase Superset Looker Jaeger Tempo Loki Datadog PagerDuty
Opsgenie Renovate Dependabot Semgrep Trivy Snyk SonarQube"""
)
INTERNAL_LIBS = _split(
    """auth-middleware retry-utils feature-flags-sdk http-client schema-registry-client
config-loader audit-logger tenant-context rate-limiter idempotency-keys money-utils pdf-renderer
i18n-strings event-bus-client secrets-loader tracing-helpers pagination-helpers
deduplication-filter"""
)
ENV_VARS = _split(
    """REDIS_URL DATABASE_URL KAFKA_BROKERS SENTRY_DSN STRIPE_API_KEY JWT_SECRET
AWS_REGION S3_BUCKET SMTP_HOST LOG_LEVEL FEATURE_FLAGS_URL OTEL_EXPORTER_ENDPOINT
ELASTICSEARCH_URL MAX_WORKERS REQUEST_TIMEOUT_MS CACHE_TTL_SECONDS TENANT_ID PAYMENTS_WEBHOOK_SECRET
OAUTH_CLIENT_ID OAUTH_CLIENT_SECRET CDN_BASE_URL GRPC_PORT HTTP_PORT DB_POOL_SIZE
RABBITMQ_URL VAULT_TOKEN SLACK_WEBHOOK_URL GOOGLE_MAPS_KEY TWILIO_AUTH_TOKEN
SESSION_COOKIE_DOMAIN"""
)
PREFERENCES = (
    "tabs over spaces",
    "spaces over tabs",
    "squash merges over merge commits",
    "rebasing over merging",
    "small pull requests",
    "dark mode in every editor",
    "Vim keybindings",
    "Emacs for everything",
    "pytest over unittest",
    "explicit types over inference",
    "functional components over classes",
    "monorepos",
    "trunk-based development",
    "conventional commit messages",
    "async standups over meetings",
    "pair programming on hard bugs",
    "writing tests before the fix",
    "feature flags over long-lived branches",
    "Postgres over MySQL",
    "JSON logs over plain text",
)
CITIES = _split(
    """Berlin London Paris Madrid Lisbon Amsterdam Warsaw Prague Vienna Dublin Toronto
Austin Seattle Boston Denver Chicago Singapore Sydney Bangalore Nairobi Lagos Istanbul
Stockholm Helsinki Oslo Tallinn Montevideo Bogota Lima Santiago"""
)
TIMEZONES = ("UTC", "CET", "EET", "PST", "EST", "CST", "JST", "IST", "AEST", "BRT")
CHANNELS = ("Slack", "email", "Teams", "Signal", "the team channel", "GitHub comments")
HUMAN_LANGUAGES = (
    "English",
    "Spanish",
    "Portuguese",
    "German",
    "French",
    "Japanese",
    "Mandarin",
    "Hindi",
    "Polish",
    "Turkish",
    "Swahili",
    "Arabic",
)
MONTHS = _split(
    """January February March April May June July August September October November
December"""
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
CODENAMES = _split(
    """Falcon Orion Nebula Granite Cobalt Sparrow Hydra Kestrel Basalt Quasar Lynx
Aurora Tundra Meridian Obsidian Juniper Marlin Pegasus Zephyr Cinder Halcyon Vortex Sequoia
Monsoon Gryphon Tamarind Wombat Argon Krypton Saffron Topaz Beacon Lantern Harbor Atlas Comet
Voyager Mosaic Prism Ember Glacier Summit Canyon Delta Echo Fjord Horizon Island Jasper Keystone
Lighthouse Mariner Nimbus Oasis Pinnacle Quarry Riverbend Solstice Trident Umbra Valkyrie
Willow Yarrow Zenith"""
)
PROJECT_GOALS = (
    "move billing off the legacy monolith",
    "cut checkout latency below 200 ms",
    "replace the homegrown job queue",
    "support multiple currencies in invoices",
    "add single sign-on for enterprise customers",
    "migrate every service to Kubernetes",
    "deprecate the v1 REST API",
    "introduce end-to-end encryption for chat",
    "split the monolith database per domain",
    "rebuild the search relevance pipeline",
    "make onboarding self-serve",
    "reach SOC 2 compliance",
    "ship the mobile offline mode",
    "consolidate logging on one vendor",
    "reduce cloud spend by a third",
)
CAUSES = (
    "connection pool exhaustion",
    "a missing database index",
    "clock skew between nodes",
    "an expired TLS certificate",
    "a race condition in the retry loop",
    "unbounded memory growth in the cache",
    "a deadlock between two migrations",
    "DNS resolution timeouts",
    "a misconfigured load balancer health check",
    "an N+1 query in the serializer",
    "integer overflow in the counter",
    "a stale feature flag",
    "timezone handling around daylight saving",
    "Unicode normalization of user names",
    "a full disk on the broker",
    "thundering herd after a cache flush",
    "a leaked file descriptor",
    "an unhandled null in the webhook payload",
)
SYMPTOMS = (
    "checkout timeout",
    "duplicate emails",
    "login loop",
    "missing invoices",
    "slow dashboard",
    "stale search results",
    "wrong currency rounding",
    "upload fails on large files",
    "webhook retries storm",
    "memory leak in worker",
    "pagination skips rows",
    "password reset link expired",
    "race in refund flow",
    "broken CSV export",
    "timezone off by one hour",
    "cache stampede",
    "flaky integration test",
    "500 on empty cart",
)
HTTP_CODES = ("400", "401", "403", "404", "409", "422", "429", "500", "502", "503", "504")
BROWSERS = ("Safari 17", "Firefox 124", "Chrome 123", "Edge", "iOS 17", "Android 14")
ADR_VERBS = ("Use", "Adopt", "Replace", "Drop", "Migrate to", "Standardize on", "Evaluate")
ADR_REASONS = (
    "the team already knows it",
    "licensing costs of the alternative",
    "better support for JSON columns",
    "it halves the p99 latency in our benchmark",
    "vendor lock-in concerns",
    "the old tool is no longer maintained",
    "simpler operations for a small team",
    "strict typing catches bugs earlier",
    "it integrates with our tracing",
    "compliance requires data residency in the EU",
)
MEETING_KINDS = (
    "planning",
    "retro",
    "architecture review",
    "incident review",
    "roadmap sync",
    "design review",
    "security review",
    "demo",
)
MEETING_TOPICS = (
    "the database migration plan",
    "on-call load and rotations",
    "flaky end-to-end tests",
    "the Q3 roadmap",
    "hiring for the platform team",
    "API versioning policy",
    "error budget burn",
    "the cost of staging environments",
    "moving CI to GitHub Actions",
    "deprecating Python 3.8",
    "dependency upgrade cadence",
    "accessibility audit findings",
)
ACTIONS = (
    "write a runbook for the failover",
    "add alerts on queue depth",
    "pin the base image digest",
    "benchmark the new serializer",
    "draft the deprecation notice",
    "schedule a chaos game day",
    "document the release checklist",
    "raise the connection pool limit",
    "split the flaky test suite",
    "rotate the leaked credentials",
    "enable query logging for a week",
    "review the IAM policies",
)
TEAMS = (
    "Platform",
    "Payments",
    "Growth",
    "Identity",
    "Data",
    "Mobile",
    "Search",
    "Infra",
    "Security",
    "Checkout",
    "Developer Experience",
    "Reliability",
)
LICENSES = ("MIT", "Apache-2.0", "BSD-3-Clause", "MPL-2.0", "GPL-3.0", "proprietary")
PURPOSES = (
    "invoices",
    "sessions",
    "audit events",
    "product catalog",
    "user profiles",
    "rate limit counters",
    "search documents",
    "job state",
    "feature flags",
    "payment intents",
    "exchange rates",
    "shipping quotes",
    "analytics events",
)
UPGRADE_BREAKS = (
    "datetime parsing",
    "the plugin API",
    "async context managers",
    "default timeouts",
    "JSON serialization of decimals",
    "the CLI flags",
    "connection pooling",
    "type stubs",
)
INFIXES = _split(
    """script sql house alchemy orm wright darkly duty genie qube query shift flake cloak smith
    nail boarding bend base watch dog pack build wind hook ization entication orization potency
    ciliation duplication sson mura gaard bernetes gres stream limit serial"""
)
"""Inner pieces people type to find a longer word: ``script`` for TypeScript, ``sql`` for
PostgreSQL. Those that are a whole word somewhere in the corpus are skipped."""
CONCERNS = (
    "authentication",
    "authorization",
    "serialization",
    "pagination",
    "reconciliation",
    "deduplication",
    "internationalization",
    "idempotency",
    "throttling",
)
MODULE_KINDS = ("handlers", "models", "views", "tasks", "client")
SECRET_STORES = ("Vault", "AWS Secrets Manager", "a Kubernetes secret", "the .env file")
CONFIG_DEFAULTS = ("empty", "localhost", "30", "true", "info")
SETUP_STEPS = ("migrations", "the seeding job", "load tests")
FOODS = (
    "ramen",
    "tacos",
    "falafel",
    "sushi",
    "pierogi",
    "dumplings",
    "croissants",
    "empanadas",
    "pho",
    "biryani",
    "gnocchi",
    "bibimbap",
)

# ---- accented and non-Latin vocabularies ----------------------------------------------------

ACCENT_PEOPLE = (
    "José García",
    "François Lefèvre",
    "Zoë Schäfer",
    "Björn Åkesson",
    "Renée Lévesque",
    "Jürgen Groß",
    "Małgorzata Wójcik",
    "Søren Højgaard",
    "Ana Núñez",
    "Çağla Y\u0131ld\u0131z",
    "Antonín Dvořák",
    "Hélène Bérubé",
    "Thérèse Mercier",
    "Ångström Lindqvist",
    "Noémie Fauré",
    "Dalibor Šťastný",
    "Željko Marić",
    "Íñigo Ibáñez",
    "Gisèle Côté",
    "Mélanie Brisebois",
    "Joël Pétrin",
    "Pál Erdős",
    "Jörg Köhler",
    "Loïc Crépin",
    "Inês Gonçalves",
    "João Simões",
    "Ólafur Þórsson",
    "Ærøskøbing Æbelø",
    "Léa Thévenin",
    "Rémi Mégret",
)
ACCENT_PLACES = (
    (
        "Café Müller",
        "location",
        ["Meets the design team at Café Müller on Fridays", "Serves the best Königsberger Klopse"],
    ),
    (
        "école Jules Ferry",
        "location",
        ["Alice Chen's daughter goes to the école Jules Ferry", "Pick-up time is 16:30"],
    ),
    (
        "São Paulo office",
        "location",
        ["Opened in 2024 with twelve engineers", "Close to Avenida Paulista"],
    ),
    (
        "Zürich office",
        "location",
        ["Hosts the payments compliance team", "Badge access needs a Zürich ID card"],
    ),
    (
        "Kraków office",
        "location",
        ["Houses the QA lab", "Near the Wawel castle and the Vistula river"],
    ),
    (
        "Montréal office",
        "location",
        [
            "Bilingual support desk in français and English",
            "Snow days close the office twice a year",
        ],
    ),
    (
        "Genève data centre",
        "location",
        ["Primary region for Swiss customers", "Certified under FINMA rules"],
    ),
    (
        "Düsseldorf warehouse",
        "location",
        ["Ships the Rhine region within a day", "Forklift maintenance every Tuesday"],
    ),
    (
        "Reykjavík edge site",
        "location",
        ["Runs on geothermal power", "Hosts the Icelandic CDN cache"],
    ),
    (
        "Málaga coworking",
        "location",
        ["Used by the remote growth team in winter", "Wi-Fi drops after 18:00"],
    ),
    (
        "Crème Brûlée bakery",
        "location",
        ["Caters the Friday demo with pastries", "Owner is Thérèse Mercier"],
    ),
    (
        "résumé-parser",
        "service",
        ["Extracts skills from uploaded résumés", "Uses spaCy for entity recognition"],
    ),
    (
        "naïve-bayes-filter",
        "service",
        ["Classifies support tickets with a naïve Bayes model", "Retrained every Sunday night"],
    ),
    (
        "façade-gateway",
        "service",
        ["Implements the façade pattern over the legacy SOAP APIs", "Owned by the Platform team"],
    ),
    (
        "Déjà vu bug",
        "bug",
        ["Notifications are delivered twice after a reconnect", "Nicknamed déjà vu by support"],
    ),
    (
        "Piñata release",
        "event",
        ["Release party for version 4.0 with a piñata", "Took place in the Málaga coworking"],
    ),
    (
        "Göteborg meetup",
        "meeting",
        ["Talk about Kotlin coroutines at the Göteborg meetup", "Forty attendees, two sponsors"],
    ),
    (
        "Łódź contractor",
        "organization",
        ["Builds the Android app under contract", "Invoices monthly in złoty"],
    ),
    (
        "Smørrebrød lunch",
        "event",
        ["Team lunch at the Copenhagen office", "Booked by Søren Højgaard"],
    ),
    (
        "Straße migration",
        "decision",
        ["Address fields must keep Straße as written", "Normalizing ß broke German address search"],
    ),
)
ACCENT_OBSERVATIONS = (
    "Orders pastries from Crème Brûlée bakery for demos",
    "Learned German while living near Düsseldorf",
    "Gave a talk at the Göteborg meetup",
    "Visited the Zürich office for onboarding",
    "Prefers the café in the lobby for 1:1s",
    "Wrote the naïve first version of the importer",
    "Keeps a résumé of past incidents",
    "Studied at the École Polytechnique",
    "Speaks français at home",
    "Moved from São Paulo in 2023",
)
JA_CITIES = (
    "東京",
    "大阪",
    "京都",
    "名古屋",
    "福岡",
    "札幌",
    "横浜",
    "神戸",
    "仙台",
    "広島",
    "那覇",
    "金沢",
)
JA_LANDMARKS = (
    "東京タワー",
    "スカイツリー",
    "大阪城",
    "金閣寺",
    "名古屋城",
    "博多駅",
    "時計台",
    "中華街",
    "異人館",
    "原爆ドーム",
    "首里城",
    "兼六園",
    "清水寺",
    "道頓堀",
)
JA_TECH = (
    "データベース",
    "キャッシュ",
    "マイクロサービス",
    "認証基盤",
    "監視ツール",
    "決済システム",
    "検索エンジン",
    "メッセージキュー",
    "コンテナ",
    "負荷分散",
    "ログ収集",
    "バッチ処理",
)
JA_SURNAMES = (
    "佐藤",
    "鈴木",
    "高橋",
    "田中",
    "伊藤",
    "渡辺",
    "山本",
    "中村",
    "小林",
    "加藤",
    "吉田",
    "山田",
    "佐々木",
    "山口",
    "松本",
    "井上",
    "木村",
    "斎藤",
    "清水",
    "森",
)
JA_GIVEN = ("太郎", "花子", "健太", "美咲", "翔", "陽菜", "大輔", "結衣", "拓海", "愛", "蓮", "葵")
JA_FOODS = (
    "ラーメン",
    "寿司",
    "天ぷら",
    "うどん",
    "焼き鳥",
    "カレー",
    "蕎麦",
    "鰻",
    "納豆",
    "抹茶",
    "餃子",
    "お好み焼き",
)
JA_WEEKDAYS = ("月", "火", "水", "木", "金")
JA_PROBLEMS = ("メモリリーク", "タイムアウト", "デッドロック", "文字化け", "二重送信", "遅いクエリ")
ZH_CITIES = (
    "北京",
    "上海",
    "深圳",
    "杭州",
    "成都",
    "广州",
    "南京",
    "武汉",
    "西安",
    "重庆",
    "苏州",
    "天津",
)
ZH_LANDMARKS = (
    "天安门",
    "外滩",
    "西湖",
    "宽窄巷子",
    "广州塔",
    "夫子庙",
    "黄鹤楼",
    "大雁塔",
    "解放碑",
    "拙政园",
    "世界之窗",
    "天津之眼",
)
ZH_ARCH = ("微服务", "单体", "事件驱动", "分层", "无服务器", "读写分离")
ZH_MODULES = (
    "支付模块",
    "用户中心",
    "订单系统",
    "搜索服务",
    "推荐算法",
    "风控系统",
    "消息推送",
    "日志平台",
    "库存系统",
    "报表中心",
)
ZH_CLOUDS = ("阿里云", "腾讯云", "华为云", "自建机房")
ZH_SURNAMES = (
    "王",
    "李",
    "张",
    "刘",
    "陈",
    "杨",
    "赵",
    "黄",
    "周",
    "吴",
    "徐",
    "孙",
    "马",
    "朱",
    "胡",
    "郭",
)
ZH_GIVEN = (
    "伟",
    "娜",
    "敏",
    "洋",
    "静",
    "磊",
    "丽",
    "强",
    "杰",
    "芳",
    "明",
    "涛",
    "超",
    "琳",
    "军",
    "平",
)
ZH_FOODS = ("火锅", "饺子", "小笼包", "北京烤鸭", "麻辣烫", "肠粉", "热干面", "肉夹馍")
ZH_PROBLEMS = ("内存泄漏", "超时", "死锁", "数据不一致", "缓存穿透", "慢查询")
ZH_DAYS = ("一", "二", "三", "四", "五")
CJK_LEXICON = tuple(
    sorted(
        set(
            JA_CITIES
            + JA_LANDMARKS
            + JA_TECH
            + JA_SURNAMES
            + JA_GIVEN
            + JA_FOODS
            + JA_PROBLEMS
            + ZH_CITIES
            + ZH_LANDMARKS
            + ZH_ARCH
            + ZH_MODULES
            + ZH_CLOUDS
            + ZH_GIVEN
            + ZH_FOODS
            + ZH_PROBLEMS
            + (
                "近く",
                "担当",
                "定例会議",
                "会議室",
                "本番環境",
                "デプロイ",
                "移行",
                "問題",
                "引っ越した",
                "タワー",
                "システム",
                "サービス",
                "エンジン",
                "決済",
                "検索",
                "監視",
                "認証",
                "浜松",
                "鰻屋",
                "打ち上げ",
                "参加者",
                "架构",
                "附近",
                "负责",
                "例会",
                "部署",
                "上线时间",
                "数据存储",
                "机房",
                "版本",
                "升级",
                "办公室",
                "オフィス",
                "刷新",
                "プロジェクト",
                "重构",
                "服务",
                "系统",
                "模块",
                "烤鸭",
                "喜欢吃",
                "使用",
                "位于",
            )
        )
    )
)
"""Japanese and Chinese words a user would type; CJK queries are made of these."""

HAND_WRITTEN = (
    (
        "Alice Chen",
        "person",
        [
            "Tech lead of the billing-service",
            "Prefers tabs over spaces",
            "Based in the Berlin office",
            "Wrote ADR-012 Use Postgres",
            "Allergic to peanuts: no satay at team lunches",
        ],
    ),
    (
        "billing-service",
        "service",
        [
            "Uses PostgreSQL 15 for invoices",
            "Deploy fails when REDIS_URL is unset",
            "Written in Python 3.12 with FastAPI",
            "Owned by the Payments team",
            "Runs database migrations with Alembic",
            "Nightly reconciliation job runs at 02:00 UTC",
        ],
    ),
    (
        "ADR-012 Use Postgres",
        "decision",
        [
            "Status: accepted on 2025-03-14",
            "Moved from MySQL to PostgreSQL for billing",
            "Reason: better support for JSON columns",
            "Alternatives considered: CockroachDB and MySQL",
        ],
    ),
    (
        "auth-middleware",
        "library",
        [
            "Validates JWT access tokens with RS256",
            "Handles authentication and authorization for every API",
            "Rejects tokens older than 15 minutes",
            "Version 3 dropped support for cookie sessions",
        ],
    ),
    (
        "東京オフィス",
        "location",
        [
            "東京タワーの近くにある",
            "会議室は12階にある",
            "佐藤太郎さんが担当している",
            "毎週水曜日に定例会議がある",
        ],
    ),
    (
        "北京办公室",
        "location",
        ["使用微服务架构", "位于天安门附近", "王伟负责支付模块", "部署在阿里云上"],
    ),
    (
        "frontend-monorepo",
        "project",
        [
            "All web apps live here, built with TypeScript 5.4 and Vite",
            "Uses pnpm workspaces and Turborepo",
            "CI takes 14 minutes on a cold cache",
        ],
    ),
    (
        "kubernetes-upgrade-2026",
        "project",
        [
            "Upgrade the production clusters from Kubernetes 1.28 to 1.31",
            "Blocked by the deprecated PodSecurityPolicy in the ingress chart",
            "Owner: Hiro Tanaka",
        ],
    ),
    (
        "Friday deploy freeze",
        "decision",
        [
            "No production deploys after 15:00 on Fridays",
            "Exceptions need approval from the on-call incident commander",
        ],
    ),
    (
        "observability-stack",
        "project",
        [
            "Traces go to Tempo, metrics to Prometheus, logs to Loki",
            "Grafana dashboards are provisioned from the monitoring repository",
        ],
    ),
    ("浜松の打ち上げ", "event", ["浜松の鰻屋で打ち上げをした", "参加者は十五人"]),
    (
        "rate-limiter",
        "library",
        [
            "Token bucket per API key, stored in Redis",
            "Returns HTTP 429 with a Retry-After header",
            "Burst size defaults to twenty requests",
        ],
    ),
)


# ---- text handling ----------------------------------------------------------------------------

_TOKENIZER_DB = apsw.Connection(":memory:")
_TOKENIZER = _TOKENIZER_DB.fts5_tokenizer("unicode61", ["remove_diacritics", "2"])

# letters remove_diacritics cannot decompose, folded the way a person types them on a US keyboard
_EXTRA_FOLD = str.maketrans(
    {
        "ø": "o",
        "ß": "ss",
        "ł": "l",
        "æ": "ae",
        "œ": "oe",
        "đ": "d",
        "\u0131": "i",  # dotless i
        "þ": "th",
        "ð": "d",
        "ŀ": "l",
    }
)


def fold(text: str) -> str:
    """Case- and accent-fold as typed without accent keys: ``Søren Groß`` -> ``soren gross``."""
    text = text.lower().translate(_EXTRA_FOLD)
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize(
        "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
    )


def words(text: str) -> list[str]:
    """The words of ``text`` as FTS5 ``unicode61`` sees them, then :func:`fold`-ed.

    A run of CJK characters (or CJK glued to Latin letters) is one word, as in the index.
    """
    data = text.encode("utf-8")
    return [
        fold(str(t[0]))
        for t in _TOKENIZER(data, apsw.FTS5_TOKENIZE_DOCUMENT, None, include_offsets=False)
    ]


_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
"""Hiragana, katakana and CJK ideographs."""


def is_cjk(ch: str) -> bool:
    return _CJK.match(ch) is not None


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


STOPWORDS = frozenset(
    _split(
        """a an the of to in on for is are was be been and or with by at when from as
it its this that after before per than over not no into up out every all has have had only
if then there their our we you he she they his her them must can will should would more most
some any each two one while via during between"""
    )
)


# ---- the corpus -------------------------------------------------------------------------------


def _version(rng: random.Random, versions: Sequence[str]) -> str:
    v = rng.choice(versions)
    return f" {v}" if v else ""


def build_corpus(seed: int = SEED) -> tuple[list[Entity], list[Relation]]:
    """~3,000 entities of an agent's working memory and ~4,500 relations, the same every run."""
    rng = random.Random(seed)
    entities: dict[str, tuple[str, list[str]]] = {}

    def add(name: str, etype: str, observations: Iterable[str]) -> None:
        if name not in entities:
            entities[name] = (etype, list(dict.fromkeys(observations)))

    for name, etype, obs in HAND_WRITTEN:
        add(name, etype, obs)

    people = sorted({f"{f} {last}" for f in FIRST_NAMES for last in LAST_NAMES})
    people = rng.sample(people, 900)
    services = [f"{d}-{s}" for d in DOMAINS for s in SERVICE_SUFFIXES]
    services = sorted(rng.sample(services, 260))
    libraries = LIBRARIES + INTERNAL_LIBS
    projects = [f"Project {c}" for c in CODENAMES]
    teams = [f"{t} team" for t in TEAMS]

    def db_phrase() -> str:
        db, versions = rng.choice(DATABASES)
        return db + _version(rng, versions)

    def lang_phrase() -> str:
        lang, versions = rng.choice(LANGUAGES)
        return lang + _version(rng, versions)

    person_templates: list[Callable[[], str]] = [
        lambda: f"Works on the {rng.choice(services)}",
        lambda: f"Owns the {rng.choice(services)} on-call rotation",
        lambda: f"Prefers {rng.choice(PREFERENCES)}",
        lambda: f"Based in the {rng.choice(CITIES)} office, timezone {rng.choice(TIMEZONES)}",
        lambda: f"Expert in {rng.choice(LIBRARIES)} and {lang_phrase()}",
        lambda: f"Reviewed the {rng.choice(LIBRARIES)} upgrade for {rng.choice(services)}",
        lambda: f"Reports to {rng.choice(people)}",
        lambda: (
            f"Joined in {rng.choice(MONTHS)} {rng.randint(2015, 2026)} on the "
            f"{rng.choice(TEAMS)} team"
        ),
        lambda: f"Prefers to be contacted on {rng.choice(CHANNELS)}",
        lambda: f"Speaks {rng.choice(HUMAN_LANGUAGES)} and {rng.choice(HUMAN_LANGUAGES)}",
        lambda: f"Likes {rng.choice(FOODS)} for team lunches",
        lambda: f"Out of office every {rng.choice(WEEKDAYS)} afternoon",
        lambda: f"Mentoring {rng.choice(people)} on {rng.choice(LIBRARIES)}",
        lambda: f"Fixed {rng.choice(CAUSES)} in {rng.choice(services)}",
    ]
    for person in people:
        count = rng.randint(3, 8)
        obs = [t() for t in rng.sample(person_templates, count)]
        if rng.random() < 0.04:
            obs.append(rng.choice(ACCENT_OBSERVATIONS))
        add(person, "person", obs)
    for person in ACCENT_PEOPLE:
        obs = [t() for t in rng.sample(person_templates, rng.randint(3, 6))]
        obs.append(rng.choice(ACCENT_OBSERVATIONS))
        add(person, "person", obs)
    for name, etype, obs in ACCENT_PLACES:
        add(name, etype, obs)

    service_templates: list[Callable[[], str]] = [
        lambda: f"Uses {db_phrase()} for {rng.choice(PURPOSES)}",
        lambda: f"Written in {lang_phrase()}",
        lambda: f"Deployed on {rng.choice(PLATFORMS)} in {rng.choice(REGIONS)}",
        lambda: f"Deploy fails when {rng.choice(ENV_VARS)} is unset",
        lambda: f"Listens on port {rng.choice((80, 443, 3000, 5000, 8000, 8080, 8443, 9090))}",
        lambda: f"Owned by the {rng.choice(TEAMS)} team",
        lambda: f"Depends on {rng.choice(services)}",
        lambda: f"Health check endpoint is /{rng.choice(('healthz', 'health', 'ready', 'ping'))}",
        lambda: f"p99 latency is {rng.randint(8, 900)} ms under load",
        lambda: f"Uses {rng.choice(LIBRARIES)} for {rng.choice(PURPOSES)}",
        lambda: (
            f"Retries {rng.randint(2, 6)} times with exponential backoff when "
            f"{rng.choice(services)} times out"
        ),
        lambda: f"Consumes events from {rng.choice(QUEUES)} topic {rng.choice(DOMAINS)}.events",
        lambda: f"Caches {rng.choice(PURPOSES)} in Redis for {rng.randint(1, 60)} minutes",
        lambda: f"Rate limited to {rng.choice((10, 50, 100, 500, 1000))} requests per second",
        lambda: f"Logs are shipped to {rng.choice(('Datadog', 'Loki', 'Splunk', 'CloudWatch'))}",
        lambda: (
            f"Migrated from {rng.choice(DATABASES)[0]} to {rng.choice(DATABASES)[0]} "
            f"in {rng.randint(2019, 2026)}"
        ),
        lambda: (
            f"Runs database migrations with "
            f"{rng.choice(('Alembic', 'Flyway', 'Liquibase', 'golang-migrate', 'Prisma'))}"
        ),
        lambda: f"Handles {rng.choice(CONCERNS)} for {rng.choice(DOMAINS)} requests",
    ]
    for service in services:
        obs = [t() for t in rng.sample(service_templates, rng.randint(4, 10))]
        add(service, "service", obs)

    library_templates: list[Callable[[], str]] = [
        lambda: (
            f"Pinned to version {rng.randint(0, 9)}.{rng.randint(0, 30)} because the "
            f"upgrade broke {rng.choice(UPGRADE_BREAKS)}"
        ),
        lambda: f"Used by {rng.choice(services)} and {rng.choice(services)}",
        lambda: f"License is {rng.choice(LICENSES)}",
        lambda: f"Maintained internally by the {rng.choice(TEAMS)} team",
        lambda: f"Upgrade to the next major version is tracked in {rng.choice(projects)}",
        lambda: f"Known issue: {rng.choice(CAUSES)} under heavy load",
        lambda: f"Configured through {rng.choice(ENV_VARS)}",
        lambda: f"Replaced {rng.choice(LIBRARIES)} in {rng.randint(2018, 2026)}",
    ]
    for library in libraries:
        add(library, "library", [t() for t in rng.sample(library_templates, rng.randint(3, 7))])

    project_templates: list[Callable[[], str]] = [
        lambda: f"Goal is to {rng.choice(PROJECT_GOALS)}",
        lambda: f"Deadline is end of {rng.choice(MONTHS)} {rng.randint(2025, 2027)}",
        lambda: f"Led by {rng.choice(people)}",
        lambda: f"Uses {lang_phrase()} and {db_phrase()}",
        lambda: f"Repository at github.com/acme/{rng.choice(DOMAINS)}-{rng.choice(DOMAINS)}",
        lambda: f"Blocked until the {rng.choice(services)} migration lands",
        lambda: f"Budget approved by {rng.choice(people)}",
        lambda: f"Weekly sync on {rng.choice(WEEKDAYS)} at {rng.randint(9, 17)}:00",
    ]
    for project in projects:
        add(project, "project", [t() for t in rng.sample(project_templates, rng.randint(3, 7))])

    for team in teams:
        add(
            team,
            "team",
            [
                f"Manager is {rng.choice(people)}",
                f"Owns {rng.choice(services)}, {rng.choice(services)} and {rng.choice(services)}",
                f"Stand-up at {rng.randint(9, 11)}:{rng.choice(('00', '15', '30'))} "
                f"{rng.choice(TIMEZONES)}",
                f"On-call handbook lives in the {team.split()[0].lower()}-runbooks repository",
            ],
        )

    adr_number = 13
    for _ in range(160):
        verb = rng.choice(ADR_VERBS)
        tech = rng.choice([d for d, _ in DATABASES] + list(LIBRARIES[:60]) + list(QUEUES))
        domain = rng.choice(DOMAINS)
        name = f"ADR-{adr_number:03d} {verb} {tech} for {domain}"
        adr_number += 1
        a, b = rng.sample([d for d, _ in DATABASES] + list(QUEUES), 2)
        add(
            name,
            "decision",
            [
                f"Status: {rng.choice(('accepted', 'proposed', 'superseded', 'rejected'))} on "
                f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                f"Proposed by {rng.choice(people)}",
                f"Reason: {rng.choice(ADR_REASONS)}",
                f"Moved from {a} to {b} for {domain}",
                f"Alternatives considered: {rng.choice(LIBRARIES)} and {rng.choice(LIBRARIES)}",
            ][: rng.randint(3, 5)],
        )

    bug_templates: list[Callable[[], str]] = [
        lambda: (
            f"{rng.choice(services)} returns HTTP {rng.choice(HTTP_CODES)} when "
            f"{rng.choice(ENV_VARS)} is unset"
        ),
        lambda: f"Reproduced on {rng.choice(BROWSERS)}",
        lambda: f"Root cause: {rng.choice(CAUSES)}",
        lambda: f"Fixed in PR #{rng.randint(100, 9999)} by {rng.choice(people)}",
        lambda: f"Regression introduced in v{rng.randint(1, 9)}.{rng.randint(0, 20)}",
        lambda: (
            f"Stack trace points to {rng.choice(DOMAINS)}.{rng.choice(MODULE_KINDS)}."
            f"{rng.choice(('process', 'save', 'retry', 'serialize', 'validate', 'dispatch'))}"
        ),
        lambda: f"Workaround: restart the {rng.choice(services)} pods",
        lambda: f"Only happens with {rng.choice(LANGUAGES)[0]} clients",
        lambda: f"Reported by {rng.choice(people)} in #{rng.choice(DOMAINS)}-support",
    ]
    for number in rng.sample(range(1000, 9999), 560):
        name = f"BUG-{number} {rng.choice(SYMPTOMS)}"
        add(name, "bug", [t() for t in rng.sample(bug_templates, rng.randint(3, 7))])
    for number in rng.sample(range(100, 999), 110):
        service = rng.choice(services)
        add(
            f"INC-{number} {service} outage",
            "incident",
            [
                f"Lasted {rng.randint(4, 300)} minutes on {rng.randint(2022, 2026)}-"
                f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                f"Caused by {rng.choice(CAUSES)}",
                f"Postmortem written by {rng.choice(people)}",
                f"Paged {rng.choice(('PagerDuty', 'Opsgenie'))} {rng.randint(2, 40)} times",
                f"Customers saw HTTP {rng.choice(HTTP_CODES)} errors on {rng.choice(services)}",
            ][: rng.randint(3, 5)],
        )

    for number in range(1, 181):
        kind = rng.choice(MEETING_KINDS)
        name = (
            f"{rng.choice(TEAMS)} {kind} {2025 + number // 120}-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d}"
        )
        add(
            name,
            "meeting",
            [
                f"Discussed {rng.choice(MEETING_TOPICS)}",
                f"Agreed to {rng.choice(ACTIONS)}",
                f"Action item for {rng.choice(people)}: {rng.choice(ACTIONS)}",
                f"Attendees: {rng.choice(people)}, {rng.choice(people)} and {rng.choice(people)}",
                f"Next one on {rng.choice(WEEKDAYS)}",
            ][: rng.randint(3, 5)],
        )

    for var in ENV_VARS:
        for service in rng.sample(services, 6):
            add(
                f"{service} {var}",
                "config",
                [
                    f"Set to the {rng.choice(('production', 'staging'))} value from "
                    f"{rng.choice(SECRET_STORES)}",
                    f"Defaults to {rng.choice(CONFIG_DEFAULTS)} locally",
                    f"Read by {service} at startup only: restart after changing it",
                    f"Must be set before running {rng.choice(SETUP_STEPS)}",
                ][: rng.randint(2, 4)],
            )

    _add_cjk(rng, add)

    names = list(entities)
    relations: dict[tuple[str, str, str], None] = {}
    relation_types = (
        "works_on",
        "owns",
        "depends_on",
        "uses",
        "decided",
        "fixed",
        "reported",
        "attended",
        "member_of",
        "located_in",
    )
    for _ in range(len(names) * 3 // 2):
        a, b = rng.sample(names, 2)
        relations[(a, b, rng.choice(relation_types))] = None
    return (
        [Entity(name=n, entityType=t, observations=o) for n, (t, o) in entities.items()],
        [Relation(**{"from": a, "to": b, "relationType": r}) for a, b, r in relations],
    )


def _add_cjk(rng: random.Random, add: Callable[[str, str, Iterable[str]], None]) -> None:
    """Japanese and Chinese entities: offices, people, projects and services."""
    ja_people = sorted({s + g for s in JA_SURNAMES for g in JA_GIVEN})
    zh_people = sorted(
        {s + g for s in ZH_SURNAMES for g in ZH_GIVEN}
        | {s + g + h for s in ZH_SURNAMES[:6] for g in ZH_GIVEN[:6] for h in ZH_GIVEN[6:9]}
    )
    ja_templates: list[Callable[[], str]] = [
        lambda: f"{rng.choice(JA_LANDMARKS)}の近くにある",
        lambda: f"{rng.choice(JA_TECH)}を使っている",
        lambda: f"{rng.choice(ja_people)}さんが担当している",
        lambda: f"毎週{rng.choice(JA_WEEKDAYS)}曜日に定例会議がある",
        lambda: f"会議室は{rng.randint(2, 40)}階にある",
        lambda: f"{rng.choice(JA_FOODS)}が好き",
        lambda: f"本番環境のデプロイは{rng.choice(JA_WEEKDAYS)}曜日に行う",
        lambda: f"{rng.choice(JA_TECH)}の移行を進めている",
        lambda: f"{rng.choice(JA_PROBLEMS)}の問題が起きた",
        lambda: f"{rng.choice(JA_CITIES)}から引っ越した",
        lambda: f"{rng.choice(('PostgreSQL', 'Redis', 'Kafka', 'Go', 'TypeScript'))}を使っている",
    ]
    zh_templates: list[Callable[[], str]] = [
        lambda: f"使用{rng.choice(ZH_ARCH)}架构",
        lambda: f"位于{rng.choice(ZH_LANDMARKS)}附近",
        lambda: f"{rng.choice(zh_people)}负责{rng.choice(ZH_MODULES)}",
        lambda: f"每周{rng.choice(ZH_DAYS)}开例会",
        lambda: f"部署在{rng.choice(ZH_CLOUDS)}上",
        lambda: f"喜欢吃{rng.choice(ZH_FOODS)}",
        lambda: f"上线时间是{rng.randint(1, 12)}月",
        lambda: f"遇到{rng.choice(ZH_PROBLEMS)}问题",
        lambda: f"数据存储在{rng.choice(ZH_CITIES)}机房",
        lambda: f"{rng.choice(('MySQL', 'Redis', 'Kafka', 'Java', 'Go'))}版本需要升级",
    ]
    for city in JA_CITIES:
        add(
            f"{city}オフィス",
            "location",
            [t() for t in rng.sample(ja_templates, rng.randint(3, 6))],
        )
    for person in rng.sample(ja_people, 110):
        add(person, "person", [t() for t in rng.sample(ja_templates, rng.randint(3, 6))])
    for tech in JA_TECH:
        add(
            f"{tech}刷新プロジェクト",
            "project",
            [t() for t in rng.sample(ja_templates, rng.randint(3, 6))],
        )
    for city in ZH_CITIES:
        add(f"{city}办公室", "location", [t() for t in rng.sample(zh_templates, rng.randint(3, 6))])
    for person in rng.sample(zh_people, 110):
        add(person, "person", [t() for t in rng.sample(zh_templates, rng.randint(3, 6))])
    for module in ZH_MODULES:
        add(f"{module}重构", "project", [t() for t in rng.sample(zh_templates, rng.randint(3, 6))])


# ---- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One query and the names of the entities that answer it correctly."""

    cls: str
    sub: str
    text: str
    answers: frozenset[str]


@dataclass
class _Index:
    """Whole-word and substring views of the corpus, the answer key's source of truth."""

    names: list[str]
    words: list[set[str]]  # per entity, folded unicode61 words (name, type, observations)
    texts: list[str]  # per entity, folded full text
    raw_texts: list[str]  # per entity, full text as written
    sequences: list[list[list[str]]]  # per entity, word sequences (one per field)
    postings: dict[str, set[int]] = field(default_factory=dict)
    accented: set[str] = field(default_factory=set)  # folded words written with accents
    english: list[int] = field(default_factory=list)  # entities without CJK text
    vocabulary: list[str] = field(default_factory=list)
    _joined: str = ""
    _starts: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, entities: Sequence[Entity]) -> _Index:
        names, all_words, texts, raw_texts, sequences = [], [], [], [], []
        for e in entities:
            fields = [e.name, e.entityType, *e.observations]
            seqs = [words(f) for f in fields]
            names.append(e.name)
            sequences.append(seqs)
            all_words.append({w for s in seqs for w in s})
            raw_texts.append("\n".join(fields))
            texts.append(fold(raw_texts[-1]))
        index = cls(names, all_words, texts, raw_texts, sequences)
        for i, ws in enumerate(all_words):
            for w in ws:
                index.postings.setdefault(w, set()).add(i)
        index.vocabulary = sorted(index.postings)
        index.accented = {
            fold(w)
            for text in raw_texts
            for w in _RAW_WORD.findall(text)
            if not w.isascii() and not has_cjk(w)
        }
        index._joined = "\n".join(index.vocabulary)
        position = 0
        for w in index.vocabulary:
            index._starts.append(position)
            position += len(w) + 1
        return index

    def df(self, word: str) -> int:
        return len(self.postings.get(word, ()))

    def with_all(self, query_words: Iterable[str]) -> set[int]:
        sets = [self.postings.get(w, set()) for w in query_words]
        return set.intersection(*sets) if sets else set()

    def words_containing(self, piece: str) -> list[str]:
        """Every corpus word with ``piece`` inside it (or equal to it)."""
        found: list[str] = []
        start = self._joined.find(piece)
        while start != -1:
            word = self.vocabulary[bisect_right(self._starts, start) - 1]
            found.append(word)
            start = self._joined.find(piece, start + 1)
        return sorted(set(found))

    def with_piece(self, piece: str) -> set[int]:
        """Entities with a word containing ``piece``."""
        out: set[int] = set()
        for w in self.words_containing(piece):
            out |= self.postings[w]
        return out

    def with_substring(self, piece: str) -> set[int]:
        return {i for i, t in enumerate(self.texts) if piece in t}

    def with_phrase(self, phrase: Sequence[str]) -> set[int]:
        n = len(phrase)
        out = set()
        for i in self.with_all(phrase):
            for seq in self.sequences[i]:
                if any(seq[j : j + n] == list(phrase) for j in range(len(seq) - n + 1)):
                    out.add(i)
                    break
        return out


def _content_words(seq: Iterable[str]) -> list[str]:
    return [w for w in seq if w not in STOPWORDS and not has_cjk(w) and len(w) >= 2]


def _context_words(index: _Index, target: int, exclude: str) -> list[str]:
    """Plain words of the entity (no digits, no accents) to pair with a partial word or typo."""
    return sorted(
        w
        for w in _content_words(index.words[target])
        if w != exclude and w.isalpha() and w.isascii() and w not in index.accented
    )


def _english(index: _Index) -> list[int]:
    if not index.english:
        index.english = [i for i, t in enumerate(index.texts) if not has_cjk(t)]
    return index.english


def build_queries(entities: Sequence[Entity], seed: int = SEED) -> list[Query]:
    """The query set, drawn from ``entities`` (the output of :func:`build_corpus`)."""
    index = _Index.build(entities)
    rng = random.Random(seed + 1)
    queries: list[Query] = []
    seen: set[str] = set()

    def keep(cls: str, sub: str, text: str, answers: Iterable[int]) -> bool:
        key = fold(text)
        if key in seen:
            return False
        seen.add(key)
        queries.append(Query(cls, sub, text, frozenset(index.names[i] for i in answers)))
        return True

    _known_items(index, rng, keep)
    _partials(index, rng, keep)
    _cjk(index, rng, keep)
    _accents(index, rng, keep)
    _typos(index, rng, keep)
    _phrases(index, rng, keep)
    return queries


Keep = Callable[[str, str, str, Iterable[int]], bool]


def _known_items(index: _Index, rng: random.Random, keep: Keep) -> None:
    """2-4 whole words of one entity, shuffled; exactly that entity holds them all.

    Half are ``combination`` queries where every word also occurs in other entities (only the
    combination identifies the entity, so ranking by bm25 and word counts matters); half have
    one word unique to the entity (``distinctive``).
    """
    candidates = _english(index)
    quota = {"combination": QUOTAS["known_item"] // 2, "distinctive": QUOTAS["known_item"] // 2}
    while any(quota.values()):
        target = rng.choice(candidates)
        seqs = index.sequences[target]
        # words from the name and one or two observations, as an agent half-remembers them
        pool = _content_words(seqs[0])
        for seq in rng.sample(seqs[2:], min(2, len(seqs) - 2)):
            pool += _content_words(seq)
        # words written with accents belong to the accent class, not here
        pool = sorted(set(pool) - index.accented)
        k = rng.choice((2, 2, 3, 3, 4))
        if len(pool) < k:
            continue
        chosen = rng.sample(pool, k)
        if index.with_all(chosen) != {target}:
            continue
        sub = "distinctive" if min(index.df(w) for w in chosen) == 1 else "combination"
        if quota[sub] and keep("known_item", sub, " ".join(chosen), [target]):
            quota[sub] -= 1


def _partials(index: _Index, rng: random.Random, keep: Keep) -> None:
    """Partial words, three sub-classes.

    ``prefix`` / ``infix``: a word start or inner piece (>= 3 letters) that is no whole word
    anywhere, alone or with a whole word of the entity, which is then the only entity having
    both. ``whole-first``: a word that one or two entities have whole and three others have
    only inside longer words (``auth`` vs ``authentication``): the whole word must rank first.
    """
    whole_first = 20
    plain = sorted(
        w
        for w in index.vocabulary
        if len(w) >= 3
        and w.isalpha()
        and w.isascii()
        and w not in index.accented
        and index.df(w) <= 2
        and len(w) >= 4
        and w not in STOPWORDS
    )
    for word in rng.sample(plain, len(plain)):
        if not whole_first:
            break
        holder = index.postings[word]
        if len(index.with_piece(word) - holder) >= 3 and keep(
            "partial", "whole-first", word, holder
        ):
            whole_first -= 1
    candidates = _english(index)
    quota = (QUOTAS["partial"] - 20) // 2
    attempts = 0
    while quota and attempts < 20_000:
        attempts += 1
        target = rng.choice(candidates)
        long_words = [w for w in _context_words(index, target, "") if len(w) >= 6]
        if not long_words:
            continue
        word = rng.choice(long_words)
        piece = word[: rng.randint(3, min(7, len(word) - 2))]
        if index.df(piece):  # a whole word somewhere: not a partial-word query
            continue
        text = _narrow(index, rng, piece, word, target)
        if text and keep("partial", "prefix", text, [target]):
            quota -= 1
    quota = (QUOTAS["partial"] - 20) // 2
    pieces = [p for p in INFIXES if not index.df(p) and index.with_piece(p)]
    for piece in rng.sample(pieces, len(pieces)):
        if not quota:
            break
        inside = sorted(
            i
            for w in index.words_containing(piece)
            if not w.startswith(piece)
            for i in index.postings[w]
        )
        if not inside:
            continue
        target = rng.choice(inside)
        word = next(w for w in sorted(index.words[target]) if piece in w[1:])
        text = _narrow(index, rng, piece, word, target)
        if text and keep("partial", "infix", text, [target]):
            quota -= 1


def _narrow(index: _Index, rng: random.Random, piece: str, word: str, target: int) -> str | None:
    """``piece`` alone if only ``target`` has a word containing it, else ``piece`` plus a whole
    word of ``target`` that no other such entity has, or None if there is none."""
    holders = index.with_piece(piece)
    if holders == {target}:
        return piece
    context = _context_words(index, target, word)
    extra = next(
        (w for w in rng.sample(context, len(context)) if holders & index.postings[w] == {target}),
        None,
    )
    if extra is None:
        return None
    return f"{piece} {extra}" if rng.random() < 0.5 else f"{extra} {piece}"


def _cjk_runs(index: _Index, i: int) -> list[str]:
    return sorted({w for w in index.words[i] if len(w) >= 3 and all(is_cjk(c) for c in w)})


def _cjk(index: _Index, rng: random.Random, keep: Keep) -> None:
    """Real words (:data:`CJK_LEXICON`) found in the Japanese or Chinese runs of one entity.

    A run without spaces is one ``unicode61`` token, so a word is often a piece of a token.
    Sub-classes: ``start`` (every word starts its run, so a prefix query finds it), ``inside-3+``
    (a word of 3+ characters from inside a run) and ``inside-1-2`` (a 1-2 character word from
    inside a run: the hard case). A word found in other entities too is paired with a second
    word of the same entity, as a user narrowing down would.
    """
    quota = {"start": 15, "inside-3+": 15, "inside-1-2": QUOTAS["cjk"] - 30}
    # (entity, word, starts its run) for every lexicon word in every CJK run
    found: dict[str, list[tuple[int, str, bool]]] = {k: [] for k in quota}
    for i in range(len(index.names)):
        for run in _cjk_runs(index, i):
            for word in CJK_LEXICON:
                at = run.find(word)
                if at < 0 or len(word) == len(run):
                    continue
                kind = "start" if at == 0 else "inside-1-2" if len(word) <= 2 else "inside-3+"
                found[kind].append((i, word, at == 0))
    attempts = 0
    while any(quota.values()) and attempts < 20_000:
        attempts += 1
        kind = rng.choice([k for k in quota if quota[k]])
        target, word, _ = rng.choice(found[kind])
        holders = index.with_substring(word)
        pieces = [word]
        if holders != {target}:
            # the second word must not change the sub-class: a start word for "start", any
            # word of 3+ characters (or a start word) otherwise
            others = [
                (w, at_start)
                for i, w, at_start in found["start"] + found["inside-3+"]
                if i == target and w != word and (at_start or kind != "start")
            ]
            if not others:
                continue
            other = rng.choice(sorted(set(others)))[0]
            if holders & index.with_substring(other) != {target}:
                continue
            pieces.insert(rng.randint(0, 1), other)
        if keep("cjk", kind, " ".join(pieces), [target]):
            quota[kind] -= 1


def _accents(index: _Index, rng: random.Random, keep: Keep) -> None:
    """An accented word typed without its accents, or in another case.

    ``decomposable`` letters (é, ü, å...) fold by Unicode decomposition; ``letter`` ones (ø, ß,
    ł, æ, þ, dotless i) are letters of their own that a user types as o, ss, l, ae, th, i.
    """
    raw = {
        w
        for text in index.raw_texts
        for w in _RAW_WORD.findall(text)
        if not w.isascii() and not has_cjk(w)
    }
    accented = sorted((w, fold(w)) for w in raw)
    quota = {"decomposable": QUOTAS["accent"] - 8, "letter": 8}
    attempts = 0
    while any(quota.values()) and attempts < 20_000:
        attempts += 1
        original, folded = rng.choice(accented)
        kind = (
            "letter"
            if original.lower().translate(_EXTRA_FOLD) != original.lower()
            else "decomposable"
        )
        if not quota[kind]:
            continue
        holders = index.postings.get(folded, set())
        written = sorted(i for i in holders if original in index.raw_texts[i])
        if not written:
            continue
        target = rng.choice(written)
        terms = [folded]
        if len(holders) > 1:
            context = _context_words(index, target, folded)
            extra = next(
                (
                    w
                    for w in rng.sample(context, len(context))
                    if holders & index.postings[w] == {target}
                ),
                None,
            )
            if extra is None:
                continue
            terms.append(extra)
            holders = {target}
        style = rng.choice(("lower", "lower", "title", "upper"))
        text = " ".join(
            t.upper() if style == "upper" else t.title() if style == "title" else t for t in terms
        )
        if keep("accent", kind, text, holders):
            quota[kind] -= 1


_RAW_WORD = re.compile(r"[^\W_]+")


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _typo_of(word: str, rng: random.Random) -> str:
    """``word`` with one deletion, insertion, substitution or transposition after its first
    letter (most real typos keep it)."""
    at = rng.randint(1, len(word) - 2)
    edit = rng.choice(("delete", "insert", "substitute", "transpose"))
    if edit == "delete":
        return word[:at] + word[at + 1 :]
    if edit == "insert":
        return word[:at] + rng.choice(_LETTERS) + word[at:]
    if edit == "substitute":
        return word[:at] + rng.choice(_LETTERS.replace(word[at], "")) + word[at + 1 :]
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


def _typos(index: _Index, rng: random.Random, keep: Keep) -> None:
    """One edit in a word of 6+ letters; the typo is no word of the corpus and no piece of one
    (so it is not a partial-word query).

    ``unique-word``: the word is the entity's alone. ``with-word``: a rarer word, paired with a
    correct word so that only the entity has both. ``common-word``: a word many entities share
    (``kuberentes``, ``postgressql``); any of them is a correct answer.
    """
    quota = {"unique-word": 17, "with-word": 17}
    common = QUOTAS["typo"] - sum(quota.values())
    used: set[str] = set()  # one typo per word
    candidates = _english(index)
    attempts = 0
    while any(quota.values()) and attempts < 20_000:
        attempts += 1
        target = rng.choice(candidates)
        long_words = [
            w for w in _context_words(index, target, "") if len(w) >= 6 and index.df(w) <= 40
        ]
        if not long_words:
            continue
        word = rng.choice(long_words)
        typo = _typo_of(word, rng)
        if typo == word or word in used or index.words_containing(typo):
            continue
        holders = index.postings[word]
        kind = "unique-word" if holders == {target} else "with-word"
        if not quota[kind]:
            continue
        if kind == "unique-word":
            text = typo
        else:
            context = _context_words(index, target, word)
            extra = next(
                (
                    w
                    for w in rng.sample(context, len(context))
                    if holders & index.postings[w] == {target}
                ),
                None,
            )
            if extra is None:
                continue
            text = f"{typo} {extra}" if rng.random() < 0.5 else f"{extra} {typo}"
        if keep("typo", kind, text, [target]):
            quota[kind] -= 1
            used.add(word)
    shared = [
        w
        for w in index.vocabulary
        if len(w) >= 6
        and w.isalpha()
        and w.isascii()
        and w not in index.accented
        and 3 <= index.df(w) <= 300
    ]
    for word in rng.sample(shared, len(shared)):
        if not common:
            break
        typo = _typo_of(word, rng)
        fresh = typo != word and not index.words_containing(typo)
        if fresh and keep("typo", "common-word", typo, index.postings[word]):
            common -= 1


_CLAUSE_BREAK = re.compile(r"[,;:!?()#]|\.(?:\s|$)")


def _phrases(index: _Index, rng: random.Random, keep: Keep) -> None:
    """``"2-3 adjacent words"`` found in that order in one entity only, while at least two other
    entities have all the words apart or reordered (so the quotes are what identifies it)."""
    candidates = _english(index)
    quota = QUOTAS["phrase"]
    attempts = 0
    while quota and attempts < 50_000:
        attempts += 1
        target = rng.choice(candidates)
        # a phrase a person would quote stays inside one clause of one observation
        clauses = [
            words(clause)
            for observation in index.raw_texts[target].split("\n")[2:]
            for clause in _CLAUSE_BREAK.split(observation)
        ]
        seqs = [c for c in clauses if len(c) >= 2]
        if not seqs:
            continue
        seq = rng.choice(seqs)
        n = rng.choice((2, 3, 3))
        if len(seq) < n:
            continue
        start = rng.randint(0, len(seq) - n)
        phrase = seq[start : start + n]
        ends = [phrase[0], phrase[-1]]
        if (
            len(set(phrase)) < n
            or _content_words(ends) != ends
            or not all(w.isalpha() and w.isascii() and w not in index.accented for w in phrase)
        ):
            continue
        if index.with_phrase(phrase) != {target} or len(index.with_all(phrase)) < 3:
            continue
        if keep("phrase", f"{n}-words", '"' + " ".join(phrase) + '"', [target]):
            quota -= 1


# ---- running and scoring ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    query: Query
    returned: tuple[str, ...]  # names, best first
    seconds: float

    @property
    def rank(self) -> int | None:
        """1-based position of the first correct entity, None if not in the results."""
        for position, name in enumerate(self.returned, start=1):
            if name in self.query.answers:
                return position
        return None


def run(store: object, queries: Sequence[Query], limit: int = LIMIT) -> list[Outcome]:
    """Run every query through ``store.search_nodes(text, limit=limit)``."""
    outcomes = []
    search = store.search_nodes  # type: ignore[attr-defined]
    for q in queries:
        t0 = time.perf_counter()
        result = search(q.text, limit=limit)
        elapsed = time.perf_counter() - t0
        outcomes.append(Outcome(q, tuple(e.name for e in result.entities), elapsed))
    return outcomes


@dataclass(frozen=True)
class Score:
    label: str
    n: int
    hit1: float
    hit10: float
    mrr: float
    p50_ms: float
    p95_ms: float


def score(label: str, outcomes: Sequence[Outcome]) -> Score:
    n = len(outcomes)
    # a store asked for 10 returns at most 10; cut anyway so a longer list cannot inflate scores
    ranks = [o.rank if o.rank is not None and o.rank <= LIMIT else None for o in outcomes]
    times = sorted(o.seconds * 1000 for o in outcomes)
    return Score(
        label=label,
        n=n,
        hit1=sum(r == 1 for r in ranks) / n,
        hit10=sum(r is not None for r in ranks) / n,
        mrr=sum(1 / r for r in ranks if r is not None) / n,
        p50_ms=statistics.median(times),
        p95_ms=times[min(n - 1, round(0.95 * (n - 1)))],
    )


def scores_by_class(outcomes: Sequence[Outcome], *, sub: bool = False) -> list[Score]:
    """One score per class (or per class/sub-class), in :data:`CLASSES` order, then overall."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[f"{o.query.cls}/{o.query.sub}" if sub else o.query.cls].append(o)
    order = sorted(groups, key=lambda g: (CLASSES.index(g.split("/")[0]), g))
    return [score(g, groups[g]) for g in order] + [score("all", outcomes)]


def markdown_table(scores: Sequence[Score]) -> str:
    lines = [
        "| class | n | hit@1 | hit@10 | MRR | p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        lines.append(
            f"| {s.label} | {s.n} | {s.hit1:.3f} | {s.hit10:.3f} | {s.mrr:.3f} | "
            f"{s.p50_ms:.1f} | {s.p95_ms:.1f} |"
        )
    return "\n".join(lines)
