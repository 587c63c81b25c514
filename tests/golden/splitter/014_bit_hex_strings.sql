SELECT B'1010', X'1F;', b'0', x'';
SELECT 2;
