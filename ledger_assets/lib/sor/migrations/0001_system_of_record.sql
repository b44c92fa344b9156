-- The system of record: tenants, Stripe and Plaid facts, webhook inbox, cursors, quarantine.
--
-- Conventions (ARCHITECTURE.md "Invariants"):
--   * money is bigint minor units plus a lower-case ISO currency code whose exponent is in
--     ledger.currencies (Stripe's exponents: ISK is 2 there, JPY 0, KWD 3);
--   * instants are timestamptz; a tenant's local day is derived with its IANA zone;
--   * Stripe field names are kept as the API spells them (`created`, `charge`, `source`, ...);
--   * every tenant-owned table has tenant_id and row-level security keyed on app.tenant_id.
--
-- Replica identity: every table the lake mirrors uses REPLICA IDENTITY FULL. The lake files a
-- row under (tenant, local day of its partition column); a DELETE or a partition-moving UPDATE
-- therefore needs the *old* tenant_id and timestamp, which the default identity (primary key
-- only) does not carry. FULL also logs the old row detoasted, so an unchanged TOASTed value can
-- be recovered by the CDC reader instead of turning into NULL. The cost is a larger old-tuple in
-- WAL on UPDATE/DELETE only; these tables are insert-dominated (Stripe objects change a few
-- times at most), so it is far cheaper than a second 200M-entry unique index.

create schema if not exists ledger;

create table ledger.currencies (
    code     text primary key check (code ~ '^[a-z]{3}$'),
    exponent smallint not null check (exponent between 0 and 4)
);
comment on table ledger.currencies is
    'Minor-unit exponent per currency as Stripe uses it. Kept equal to ledger_assets.lib.money.CURRENCY_EXPONENTS by a test.';

insert into ledger.currencies (code, exponent) values
    ('usd', 2), ('eur', 2), ('gbp', 2), ('cad', 2), ('aud', 2), ('nzd', 2), ('chf', 2),
    ('sek', 2), ('nok', 2), ('dkk', 2), ('sgd', 2), ('hkd', 2), ('mxn', 2), ('brl', 2),
    ('inr', 2), ('zar', 2), ('isk', 2), ('npr', 2), ('top', 2), ('wst', 2),
    ('jpy', 0), ('krw', 0), ('clp', 0), ('vnd', 0),
    ('kwd', 3), ('bhd', 3), ('jod', 3), ('omr', 3), ('tnd', 3);

create table ledger.tenants (
    tenant_id         integer primary key check (tenant_id > 0),
    name              text not null,
    time_zone         text not null,
    default_currency  text not null references ledger.currencies (code),
    stripe_account_id text not null unique,
    created_at        timestamptz not null default now()
);

-- An IANA zone name, never an abbreviation or a fixed offset. The zone is resolved once, when
-- the tenant is written: AT TIME ZONE fails for a name the server's zone database lacks, at a
-- fraction of the cost of scanning pg_timezone_names (~30 ms a row).
create function ledger.check_tenant_time_zone() returns trigger
language plpgsql as $$
begin
    if new.time_zone !~ '^[A-Za-z_]+(/[A-Za-z0-9_+-]+)+$' and new.time_zone <> 'UTC' then
        raise exception 'tenant % time_zone % is not an IANA zone name (Region/City)',
            new.tenant_id, new.time_zone using errcode = '22023';
    end if;
    begin
        perform now() at time zone new.time_zone;
    exception when invalid_parameter_value then
        raise exception 'tenant % time_zone % is unknown to this server''s zone database',
            new.tenant_id, new.time_zone using errcode = '22023';
    end;
    return new;
end $$;

create trigger tenants_time_zone_is_iana
    before insert or update of time_zone on ledger.tenants
    for each row execute function ledger.check_tenant_time_zone();

-- ---------------------------------------------------------------------------------- Stripe

create table ledger.stripe_charges (
    id                  text primary key,
    tenant_id           integer not null references ledger.tenants,
    amount              bigint not null check (amount >= 0),
    amount_captured     bigint not null check (amount_captured >= 0),
    amount_refunded     bigint not null check (amount_refunded >= 0),
    currency            text not null references ledger.currencies (code),
    status              text not null check (status in ('succeeded', 'pending', 'failed')),
    paid                boolean not null,
    captured            boolean not null,
    refunded            boolean not null,
    disputed            boolean not null,
    balance_transaction text,
    payment_intent      text,
    customer            text,
    description         text,
    metadata            jsonb not null default '{}',
    livemode            boolean not null default false,
    created             timestamptz not null,
    ingested_at         timestamptz not null default now()
);

create table ledger.stripe_refunds (
    id                  text primary key,
    tenant_id           integer not null references ledger.tenants,
    charge              text not null references ledger.stripe_charges (id),
    amount              bigint not null check (amount > 0),
    currency            text not null references ledger.currencies (code),
    status              text not null
        check (status in ('pending', 'requires_action', 'succeeded', 'failed', 'canceled')),
    reason              text,
    balance_transaction text,
    failure_balance_transaction text,
    metadata            jsonb not null default '{}',
    created             timestamptz not null,
    ingested_at         timestamptz not null default now()
);

create table ledger.stripe_disputes (
    id                   text primary key,
    tenant_id            integer not null references ledger.tenants,
    charge               text not null references ledger.stripe_charges (id),
    amount               bigint not null check (amount >= 0),
    currency             text not null references ledger.currencies (code),
    reason               text not null,
    status               text not null check (status in (
        'warning_needs_response', 'warning_under_review', 'warning_closed', 'needs_response',
        'under_review', 'won', 'lost', 'prevented', 'appeal_needs_response', 'appeal_under_review')),
    is_charge_refundable boolean not null default false,
    evidence_due_by      timestamptz,
    -- Stripe delivers the withdrawal/reinstatement balance transactions inline; their ids are kept
    -- here in order, the transactions themselves live in stripe_balance_transactions.
    balance_transactions text[] not null default '{}',
    metadata             jsonb not null default '{}',
    created              timestamptz not null,
    ingested_at          timestamptz not null default now()
);

create table ledger.stripe_payouts (
    id                    text primary key,
    tenant_id             integer not null references ledger.tenants,
    amount                bigint not null,
    currency              text not null references ledger.currencies (code),
    status                text not null check (status in ('paid', 'pending', 'in_transit', 'canceled', 'failed')),
    arrival_date          timestamptz not null,
    automatic             boolean not null default true,
    balance_transaction   text,
    failure_balance_transaction text,
    reconciliation_status text not null default 'not_applicable'
        check (reconciliation_status in ('completed', 'in_progress', 'not_applicable')),
    type                  text not null default 'bank_account' check (type in ('bank_account', 'card')),
    metadata              jsonb not null default '{}',
    created               timestamptz not null,
    ingested_at           timestamptz not null default now()
);

create table ledger.stripe_balance_transactions (
    id                 text primary key,
    tenant_id          integer not null references ledger.tenants,
    amount             bigint not null,
    fee                bigint not null,
    net                bigint not null,
    currency           text not null references ledger.currencies (code),
    -- Presentment amount x rate = settlement amount; a fraction, so never money itself.
    exchange_rate      numeric(20, 10),
    fee_details        jsonb not null default '[]',
    type               text not null,
    reporting_category text not null,
    -- Polymorphic (ch_, re_, dp_, po_, ...): no foreign key on purpose.
    source             text,
    status             text not null check (status in ('pending', 'available')),
    -- The automatic payout that swept this transaction (Stripe's `GET /v1/balance_transactions?payout=`).
    payout             text,
    available_on       timestamptz not null,
    created            timestamptz not null,
    ingested_at        timestamptz not null default now()
);

-- ----------------------------------------------------------------------------------- Plaid

create table ledger.plaid_items (
    item_id          text primary key,
    tenant_id        integer not null references ledger.tenants,
    institution_id   text not null,
    institution_name text not null,
    created_at       timestamptz not null default now()
);

create table ledger.plaid_accounts (
    account_id    text primary key,
    tenant_id     integer not null references ledger.tenants,
    item_id       text not null references ledger.plaid_items,
    name          text not null,
    official_name text,
    mask          text,
    type          text not null,
    subtype       text,
    currency      text not null references ledger.currencies (code),
    created_at    timestamptz not null default now()
);

create table ledger.plaid_transactions (
    transaction_id         text primary key,
    tenant_id              integer not null references ledger.tenants,
    item_id                text not null references ledger.plaid_items,
    account_id             text not null references ledger.plaid_accounts,
    -- Plaid's sign (positive = money out) and major units, exactly as sent (parsed as Decimal,
    -- never through float); amount_minor is the same value in minor units, same sign.
    amount                 numeric(20, 4) not null,
    amount_minor           bigint not null,
    currency               text not null references ledger.currencies (code),
    -- Bank calendar date: already the account-local day, never converted through a zone.
    date                   date not null,
    authorized_date        date,
    datetime               timestamptz,
    authorized_datetime    timestamptz,
    name                   text,
    merchant_name          text,
    payment_channel        text not null,
    category_primary       text,
    category_detailed      text,
    pending                boolean not null,
    pending_transaction_id text,
    transaction_code       text,
    ingested_at            timestamptz not null default now()
);

-- ------------------------------------------------------------------- ingestion bookkeeping

create table ledger.webhook_inbox (
    inbox_id       bigint generated always as identity primary key,
    provider       text not null check (provider in ('stripe', 'plaid')),
    -- Stripe: the event id. Plaid sends none: a SHA-256 content key of the verified body.
    event_key      text not null,
    tenant_id      integer references ledger.tenants,
    event_type     text not null,
    -- Events are applied in source_created order; arrival order never decides state.
    source_created timestamptz not null,
    received_at    timestamptz not null default now(),
    payload        jsonb not null,
    status         text not null default 'received'
        check (status in ('received', 'applied', 'quarantined', 'ignored')),
    attempts       integer not null default 0,
    applied_at     timestamptz,
    last_error     text,
    unique (provider, event_key)
);
create index webhook_inbox_pending on ledger.webhook_inbox (source_created, inbox_id)
    where status = 'received';

create table ledger.ingestion_cursors (
    provider     text not null check (provider in ('stripe', 'plaid')),
    stream       text not null,
    -- The Stripe account or Plaid item the cursor belongs to.
    scope        text not null,
    tenant_id    integer references ledger.tenants,
    cursor_value text not null,
    updated_at   timestamptz not null default now(),
    primary key (provider, stream, scope)
);

create table ledger.quarantine (
    quarantine_id  bigint generated always as identity primary key,
    tenant_id      integer,
    source         text not null,
    entity         text not null,
    record_key     text,
    reason         text not null,
    payload        jsonb not null,
    payload_sha256 text not null,
    attempts       integer not null default 1,
    first_seen_at  timestamptz not null default now(),
    last_seen_at   timestamptz not null default now(),
    resolved_at    timestamptz,
    resolution     text,
    -- The same bad record seen twice is one quarantine row with attempts = 2.
    unique (source, entity, payload_sha256)
);

-- ------------------------------------------------------------------------------- indexes
-- (tenant_id, <partition column>) serves per-tenant/day reconciliation and re-snapshots of one
-- partition; the generator loads in (tenant, time) order so these stay append-mostly.

create index stripe_charges_tenant_created on ledger.stripe_charges (tenant_id, created);
create index stripe_refunds_charge on ledger.stripe_refunds (charge);
create index stripe_disputes_charge on ledger.stripe_disputes (charge);
create index stripe_bt_tenant_created on ledger.stripe_balance_transactions (tenant_id, created);
create index stripe_bt_payout on ledger.stripe_balance_transactions (payout) where payout is not null;
create index plaid_transactions_tenant_date on ledger.plaid_transactions (tenant_id, date);
