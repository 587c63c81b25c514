-- Seed: development users (one per role), safe to run again.
--
-- Fixed ids, so a developer can act as one of them in psql:
--   SET app.user_id = '00000000-0000-4000-8000-000000000003';
-- password_hash holds a value no password hash algorithm produces, so these accounts
-- cannot log in until a developer sets a real hash for the app's own algorithm.
-- ON CONFLICT (email) DO NOTHING: a second run inserts nothing and leaves edits made
-- by hand alone (and writes no audit rows).

INSERT INTO users (id, email, email_verified, password_hash, role, name, phone, addresses, metadata,
                   deleted_at)
VALUES
    ('00000000-0000-4000-8000-000000000001', 'admin@example.com', TRUE,
     '!seed:no-login', 'admin', 'Ada Admin', '+81-3-0000-0001',
     '[]', '{"seed": true}', NULL),
    ('00000000-0000-4000-8000-000000000002', 'staff@example.com', TRUE,
     '!seed:no-login', 'staff', 'Sato Staff', '+81-3-0000-0002',
     '[]', '{"seed": true, "department": "support"}', NULL),
    ('00000000-0000-4000-8000-000000000003', 'hanako@example.com', TRUE,
     '!seed:no-login', 'customer', '山田 花子', '+81-90-0000-0003',
     '[{"label": "home", "postal_code": "150-0002", "prefecture": "東京都",
        "city": "渋谷区", "line1": "渋谷2-21-1", "default": true}]',
     '{"seed": true, "newsletter": true}', NULL),
    ('00000000-0000-4000-8000-000000000004', 'taro@example.com', FALSE,
     '!seed:no-login', 'customer', '鈴木 太郎', NULL,
     '[{"label": "home", "postal_code": "530-0001", "prefecture": "大阪府",
        "city": "大阪市北区", "line1": "梅田3-1-1", "default": true},
       {"label": "office", "postal_code": "530-0011", "prefecture": "大阪府",
        "city": "大阪市北区", "line1": "大深町4-20", "default": false}]',
     '{"seed": true}', NULL),
    ('00000000-0000-4000-8000-000000000005', 'deleted@example.com', TRUE,
     '!seed:no-login', 'customer', 'Deleted Customer', NULL,
     '[]', '{"seed": true, "note": "soft-deleted"}', '2024-01-15 00:00:00+00')
ON CONFLICT (email) DO NOTHING;

