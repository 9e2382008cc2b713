<?php

namespace App\Controller;

use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response;
use Twig\Environment;

/** A route, a template and a database query (SQLite through PDO). */
final class HelloController
{
    /** Requests this process's kernel has served: kept in worker mode. */
    private static int $served = 0;

    public function __construct(private Environment $twig, private string $database)
    {
    }

    /** Opened once per kernel: in worker mode, once per process. */
    private ?\PDO $pdo = null;

    private function db(): \PDO
    {
        if ($this->pdo) {
            return $this->pdo;
        }
        $db = $this->pdo = new \PDO('sqlite:' . $this->database, null, null, [\PDO::ATTR_ERRMODE => \PDO::ERRMODE_EXCEPTION]);
        $db->exec('PRAGMA busy_timeout = 5000');
        // Created on first use; a read on every other request.
        if (!$db->query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'greetings'")->fetchColumn()) {
            $db->exec('CREATE TABLE IF NOT EXISTS greetings (id INTEGER PRIMARY KEY, word TEXT NOT NULL)');
            $db->exec("INSERT OR IGNORE INTO greetings (id, word) VALUES (1, 'hello'), (2, 'bonjour'), (3, 'hallo')");
        }
        return $db;
    }

    public function hello(string $name, Request $request): Response
    {
        self::$served++;
        $words = $this->db()->query('SELECT word FROM greetings ORDER BY id')->fetchAll(\PDO::FETCH_COLUMN);
        return new Response($this->twig->render('hello.html.twig', [
            'name' => $name,
            'words' => $words,
            'served' => self::$served,
            'pid' => getmypid(),
            'query' => $request->query->all(),
        ]));
    }

    public function greet(Request $request): Response
    {
        $db = $this->db();
        $insert = $db->prepare('INSERT INTO greetings (word) VALUES (?)');
        $insert->execute([(string) $request->request->get('word')]);
        return new Response((string) $db->query('SELECT COUNT(*) FROM greetings')->fetchColumn(), 201);
    }
}
