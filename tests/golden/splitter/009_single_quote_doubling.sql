SELECT 'a;''b';
SELECT '';
SELECT '''';
