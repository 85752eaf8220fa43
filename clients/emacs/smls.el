;;; smls.el --- sentence embeddings from an smls server  -*- lexical-binding: t; -*-

;; Only built-in libraries: url and json.
;; Run: emacs --batch -l clients/emacs/smls.el -f smls-demo
;; Or in Emacs: (load "clients/emacs/smls.el") (smls-embed '("Hello world!"))

;;; Code:

(require 'url)
(require 'url-http)
(require 'json)

(defvar smls-url (or (getenv "SMLS_URL") "http://127.0.0.1:8000")
  "Where the smls server listens.")

(defun smls--request (path &optional body method)
  "Send METHOD (default: POST with BODY, else GET) to PATH, with BODY (a Lisp value) as JSON; return the parsed JSON answer."
  (let* ((url-request-method (or method (if body "POST" "GET")))
         (url-request-extra-headers (when body '(("Content-Type" . "application/json"))))
         (url-request-data (when body (encode-coding-string (json-encode body) 'utf-8)))
         (buffer (url-retrieve-synchronously (concat smls-url path) t nil 60)))
    (unless buffer
      (error "smls: no answer from %s" smls-url))
    (unwind-protect
        (with-current-buffer buffer
          (goto-char url-http-end-of-headers)
          (let* ((json-object-type 'alist)
                 (json-array-type 'vector)
                 (text (decode-coding-string (buffer-substring-no-properties (point) (point-max)) 'utf-8))
                 (answer (json-read-from-string text)))
            (unless (<= 200 url-http-response-status 299)
              (error "smls answered %s: %s" url-http-response-status
                     (alist-get 'message (alist-get 'error answer))))
            answer))
      (kill-buffer buffer))))

(defun smls-embed (texts &optional normalize model)
  "Return the embeddings of TEXTS (a list of strings) as a vector of vectors.
With NORMALIZE, each has unit length.  MODEL names a served model; nil
is sent as JSON null, which smls reads as \"not given\": the default model."
  (alist-get 'embeddings
             (smls--request "/embed" `((message . ,(vconcat texts))
                                       (normalize . ,(if normalize t :json-false))
                                       (model . ,model)))))

(defun smls-models ()
  "The served models: a list of (NAME . KIND), the default first marked by `smls-default-model'."
  (mapcar (lambda (m) (cons (alist-get 'name m) (alist-get 'kind m)))
          (alist-get 'models (smls--request "/models"))))

(defun smls-default-model ()
  "The name of the model a request that names none gets."
  (alist-get 'default (smls--request "/models")))

(defun smls-rerank (query documents &optional model)
  "Rank DOCUMENTS (a list of strings) by relevance to QUERY, best first.
Return (MODEL SCORER INDEXES): who ranked them, how, and the documents' indexes."
  (let ((answer (smls--request "/rerank" `((query . ,query) (documents . ,(vconcat documents)) (model . ,model)))))
    (list (alist-get 'model answer)
          (alist-get 'scorer answer)
          (mapcar (lambda (r) (alist-get 'index r)) (alist-get 'results answer)))))

(defun smls-upload (doc-id texts pages)
  "Store a document as DOC-ID: TEXTS a list of (TEXT . PAGE-IDS), PAGES a list of (PAGE-ID . NUMBER).
Return the number of sentences stored."
  (alist-get 'sentences
             (smls--request (concat "/documents/" (url-hexify-string doc-id))
                            `((texts . ,(vconcat (mapcar (lambda (x) `((text . ,(car x)) (pages . ,(vconcat (cdr x))))) texts)))
                              (pages . ,(vconcat (mapcar (lambda (p) `((id . ,(car p)) (page_number . ,(cdr p)))) pages))))
                            "PUT")))

(defun smls-search (query &optional k)
  "The K (default 10) sentences most like QUERY over every document, best first: a list of (DOC-ID INDEX TEXT PAGE-NUMBERS)."
  (mapcar (lambda (hit)
            (list (alist-get 'doc_id hit) (alist-get 'index hit) (alist-get 'text hit)
                  (mapcar (lambda (p) (alist-get 'number p)) (alist-get 'pages hit))))
          (alist-get 'results (smls--request (format "/search?q=%s&k=%d" (url-hexify-string query) (or k 10))))))

(defun smls-tokenize (text &optional model)
  "The token ids MODEL (nil: the default) reads for TEXT, without running it: a vector of integers."
  (alist-get 'ids (aref (alist-get 'texts (smls--request "/tokenize" `((text . ,text) (model . ,model) (return_tokens . :json-false)))) 0)))

(defun smls-delete (doc-id)
  "Remove the uploaded document DOC-ID and its vectors."
  (smls--request (concat "/documents/" (url-hexify-string doc-id)) nil "DELETE"))

(defun smls-demo ()
  "Embed three sentences and print how similar they are."
  (let* ((texts '("The cat sits on the mat." "A cat is sitting on a rug." "Stock markets fell sharply."))
         (vectors (smls-embed texts t))
         (dot (lambda (a b) (let ((s 0.0)) (dotimes (i (length a) s) (setq s (+ s (* (aref a i) (aref b i)))))))))
    (princ (format "vectors: %d, dimension: %d\n" (length vectors) (length (aref vectors 0))))
    (princ (format "cosine(cat, cat): %.3f\n" (funcall dot (aref vectors 0) (aref vectors 1))))
    (princ (format "cosine(cat, markets): %.3f\n" (funcall dot (aref vectors 0) (aref vectors 2)))))
  ;; Several models: list them, embed with the last embedding model listed, then rerank
  ;; by default (a cross-encoder if one is served) and by the default embedding model.
  (let* ((models (smls-models))
         (embedders (seq-filter (lambda (m) (equal (cdr m) "embedding")) models))
         (name (car (car (last embedders))))
         (documents '("Stock markets fell sharply." "Cats sleep up to sixteen hours a day." "Paris is the capital of France.")))
    (princ (format "models: %s\n" (mapconcat (lambda (m) (format "%s (%s)" (car m) (cdr m))) models ", ")))
    (princ (format "model %s: dimension %d\n" name (length (aref (smls-embed '("Hello world!") nil name) 0))))
    (dolist (model (list nil (smls-default-model)))
      (pcase-let ((`(,by ,scorer ,order) (smls-rerank "How long do cats sleep?" documents model)))
        (princ (format "rerank (%s, %s): %s\n" by scorer (mapconcat #'number-to-string order " "))))))
  ;; Documents over HTTP: upload one, search across every document, delete it.
  (princ (format "uploaded: emacs-notes, %d sentence(s)\n"
                 (smls-upload "emacs-notes" '(("Molten lava poured down the side of the volcano." "p1")) '(("p1" . 7)))))
  (pcase-let ((`(,doc ,index ,_text ,pages) (car (smls-search "an erupting volcano" 1))))
    (princ (format "search: %s, sentence %d, page %d\n" doc index (car pages))))
  (smls-delete "emacs-notes")
  (princ "deleted: yes\n")
  ;; Counting tokens without running the model: the default model's ids for a text.
  (let ((ids (smls-tokenize "Hello world!")))
    (princ (format "tokens: %d [%s]\n" (length ids) (mapconcat #'number-to-string ids ", ")))))

(provide 'smls)
;;; smls.el ends here
