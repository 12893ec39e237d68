-- Ledger accounts belong to a tenant: without the tenant in the key, a job of tenant A that
-- names tenant B's account moved B's balance.
--
-- Existing rows: an entry takes the tenant of its job's `jobs` row; an entry whose job row
-- has no tenant (published straight to JetStream without one) or no job row belongs to the
-- tenant '' (empty string), which is also where the handler books such jobs from now on.
-- Each old balance is split the same way: every tenant gets the sum of its own entries, and
-- whatever the entries do not explain (a balance set by hand, say) stays with tenant '', so
-- the total per account and currency is unchanged.

ALTER TABLE ledger_entries ADD COLUMN tenant text NOT NULL DEFAULT '';
UPDATE ledger_entries e
   SET tenant = j.tenant
  FROM jobs j
 WHERE j.id = e.job_id AND j.tenant IS NOT NULL AND j.tenant <> '';
ALTER TABLE ledger_entries ALTER COLUMN tenant DROP DEFAULT;
DROP INDEX ledger_entries_account_idx;
CREATE INDEX ledger_entries_account_idx ON ledger_entries (tenant, account, currency);

ALTER TABLE account_balances ADD COLUMN tenant text NOT NULL DEFAULT '';
ALTER TABLE account_balances DROP CONSTRAINT account_balances_pkey;
ALTER TABLE account_balances ADD PRIMARY KEY (tenant, account, currency);

-- Each tenant's share moves out of the old, tenant-less balance into a balance of its own.
WITH shares AS (
    SELECT tenant, account, currency, sum(amount_cents)::bigint AS cents
      FROM ledger_entries
     WHERE tenant <> ''
     GROUP BY tenant, account, currency
), moved AS (
    UPDATE account_balances b
       SET balance_cents = b.balance_cents - s.cents
      FROM (SELECT account, currency, sum(cents)::bigint AS cents
              FROM shares
             GROUP BY account, currency) s
     WHERE b.tenant = '' AND b.account = s.account AND b.currency = s.currency
)
INSERT INTO account_balances (tenant, account, currency, balance_cents)
SELECT tenant, account, currency, cents FROM shares;
-- A tenant-less balance left at zero with no tenant-less entry was all tenants' money.
DELETE FROM account_balances b
 WHERE b.tenant = '' AND b.balance_cents = 0
   AND NOT EXISTS (SELECT FROM ledger_entries e
                    WHERE e.tenant = '' AND e.account = b.account AND e.currency = b.currency);
ALTER TABLE account_balances ALTER COLUMN tenant DROP DEFAULT;
