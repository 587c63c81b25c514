SELECT '東京;'; SELECT 'naïve';
  SELECT 2;
