-- Seed (dev only): 50 generated customers for local development and demos.
-- Runs after the base seeds/*.sql when the environment is `dev`.
-- Deterministic: the same ids and e-mails on every machine, and a rerun adds nothing.

INSERT INTO users (id, email, email_verified, password_hash, role, name, addresses, metadata,
                   last_login_at)
SELECT
    md5('asyncmig-seed-customer-' || n)::uuid,
    format('customer%s@example.com', lpad(n::text, 3, '0')),
    n % 4 <> 0,
    '!seed:no-login',
    'customer',
    format('Customer %s', lpad(n::text, 3, '0')),
    jsonb_build_array(jsonb_build_object(
        'label', 'home',
        'postal_code', format('%s-%s', lpad((100 + n)::text, 3, '0'), lpad((n * 7)::text, 4, '0')),
        'prefecture', (ARRAY['東京都', '大阪府', '北海道', '福岡県', '愛知県'])[1 + n % 5],
        'line1', format('%s-%s-%s', 1 + n % 9, 1 + n % 20, n),
        'default', true)),
    jsonb_build_object('seed', true, 'segment', (ARRAY['new', 'regular', 'vip'])[1 + n % 3]),
    timestamptz '2024-01-01 09:00:00+09' + make_interval(days => n, hours => n % 24)
FROM generate_series(1, 50) AS n
ON CONFLICT (email) DO NOTHING;
