/* outer /* inner */ ; still comment */ SELECT 1;
SELECT /* a /* b */ ; */ 2;
