-- Migration: Create users table with advanced features
-- Author: Development Team
-- Date: 2024-01-15
-- Rollback: scripts/migrations/rollback/001_drop_users_table.sql

BEGIN;

-- ユーザーテーブル作成
CREATE TABLE IF NOT EXISTS users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) UNIQUE NOT NULL,
    email_verified BOOLEAN DEFAULT FALSE,
    password_hash VARCHAR(255) NOT NULL,
    role VARCHAR(50) NOT NULL DEFAULT 'customer',
    
    -- プロフィール情報
    name VARCHAR(255) NOT NULL,
    phone VARCHAR(20),
    phone_verified BOOLEAN DEFAULT FALSE,
    avatar_url TEXT,
    
    -- 住所情報（JSON形式で柔軟に格納）
    addresses JSONB DEFAULT '[]'::jsonb,
    
    -- セキュリティ情報
    two_factor_enabled BOOLEAN DEFAULT FALSE,
    two_factor_secret VARCHAR(255),
    last_login_at TIMESTAMP WITH TIME ZONE,
    last_login_ip INET,
    failed_login_attempts INTEGER DEFAULT 0,
    locked_until TIMESTAMP WITH TIME ZONE,
    
    -- メタデータ
    metadata JSONB DEFAULT '{}'::jsonb,
    
    -- タイムスタンプ
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP WITH TIME ZONE,
    
    -- 制約
    CONSTRAINT valid_email CHECK (email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'),
    CONSTRAINT valid_role CHECK (role IN ('customer', 'staff', 'admin', 'super_admin'))
);

-- パフォーマンス最適化のためのインデックス
CREATE INDEX idx_users_email ON users(email) WHERE deleted_at IS NULL;
CREATE INDEX idx_users_role ON users(role) WHERE deleted_at IS NULL;
CREATE INDEX idx_users_created_at ON users(created_at DESC);
CREATE INDEX idx_users_addresses_gin ON users USING GIN (addresses);
CREATE INDEX idx_users_metadata_gin ON users USING GIN (metadata);

-- 部分インデックス（アクティブユーザー用）
CREATE INDEX idx_active_users ON users(id, email) 
WHERE deleted_at IS NULL AND email_verified = TRUE;

-- 更新日時自動更新トリガー
CREATE OR REPLACE FUNCTION update_updated_at_column()
RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$ language 'plpgsql';

CREATE TRIGGER update_users_updated_at 
    BEFORE UPDATE ON users 
    FOR EACH ROW 
    EXECUTE FUNCTION update_updated_at_column();

-- Row Level Security (RLS) の設定
ALTER TABLE users ENABLE ROW LEVEL SECURITY;

-- ポリシー設定（ユーザーは自分のデータのみ参照可能）
CREATE POLICY users_select_policy ON users
    FOR SELECT
    USING (auth.uid() = id OR auth.role() IN ('admin', 'super_admin'));

CREATE POLICY users_update_policy ON users
    FOR UPDATE
    USING (auth.uid() = id OR auth.role() IN ('admin', 'super_admin'));

-- 監査ログテーブル
CREATE TABLE IF NOT EXISTS users_audit (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL,
    action VARCHAR(20) NOT NULL,
    changed_by UUID,
    changed_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    old_values JSONB,
    new_values JSONB,
    ip_address INET,
    user_agent TEXT
);

CREATE INDEX idx_users_audit_user_id ON users_audit(user_id);
CREATE INDEX idx_users_audit_changed_at ON users_audit(changed_at DESC);

COMMIT;
