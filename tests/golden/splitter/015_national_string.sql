SELECT N'na;tional';
SELECT 2;
